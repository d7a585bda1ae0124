"""The Poisson regression network of Curriculum Audiovisual Learning (Hu et al., 2020), §3.2.2 and supplement §6.3:
how many sources sound in a clip, estimated from its audio alone.

Full scale: VGGish without its three fully-connected layers on CAVL's 512x432 log-frequency spectrogram ->
64x54x512 (its last max-pool dropped, as in the CAVL audio stream; on an even-sized map the global max pool below
takes the same maximum with or without it) -> global max pool -> 512 -> fc 512 -> ReLU -> fc 1 = ``eta``, and the
Poisson rate ``lambda = exp(eta)``.

Why ``exp``: the paper does not say how its network keeps ``lambda`` positive. The exponential is the canonical link
of Poisson regression (``log lambda`` is linear in the last features, as in a Poisson GLM), which makes the loss of
Eq. 6 ``exp(eta) - y eta`` convex in ``eta`` with gradient ``lambda - y``, and lets the loss use ``eta`` directly
instead of ``log lambda`` (no log of a rate near 0). Softplus would keep the gradient bounded for large ``eta``
but makes ``-y log softplus(eta)`` steep near 0 and non-convex; with counts 1..5, ``eta`` stays near 0..2.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from avlib.nets.backbones import VGGish

__all__ = ["CountingNet"]


class CountingNet(nn.Module):
    """The counting network.

    Args:
        audio_cfg: VGGish layer list (None = VGGish); its last pool is dropped, so the trunk has the same layers as
            :class:`avlib.nets.cavl.CAVLNet`'s ``audio`` and can start from a trained CAVL audio stream.
        hidden: width of the first fully-connected layer (512 in the paper).
        batch_norm: BatchNorm in the trunk (not in the paper; used at quick scale, as for CAVL's quick net).
    """

    def __init__(self, audio_cfg: Sequence[int | str] | None = None, hidden: int = 512,
                 batch_norm: bool = False) -> None:
        super().__init__()
        self.audio = VGGish(audio_cfg, batch_norm=batch_norm, drop_last_pool=True)
        self.head = nn.Sequential(nn.Linear(self.audio.out_channels, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 1))  # fc 512 - 512 - 1 (supplement §6.3)

    def forward(self, spec: Tensor) -> dict[str, Tensor]:
        """Predict the Poisson rate of the number of sounding sources.

        Args:
            spec: ``(B, 1, F, T)`` spectrogram map.

        Returns:
            dict with ``feature`` ``(B, C)`` (the global max pool), ``log_rate`` ``(B,)`` (``eta``) and ``rate``
            ``(B,)`` (``lambda = exp(eta)``).
        """
        feature = self.audio(spec).amax(dim=(2, 3))  # GlobalMaxPooling -> (B, 512)
        log_rate = self.head(feature)[:, 0]
        return {"feature": feature, "log_rate": log_rate, "rate": log_rate.exp()}
