"""R2Gen's network, module for module, so that the released checkpoints load strictly.

Layout (state-dict names in brackets, as in github.com/cuhksz-nlp/R2Gen):

- ``visual_extractor`` [``visual_extractor.model.N``]: torchvision's ResNet children without
  the pooling and classifier (``nn.Sequential(*list(resnet.children())[:-2])``), rebuilt here in
  plain torch because torchvision is unusable next to a CPU torch build. IU X-Ray feeds its two
  views separately and concatenates the 7x7 patch features (98 "regions"); MIMIC-CXR one view.
- ``encoder_decoder.att_embed``: Linear(2048 -> 512) + ReLU + Dropout(0.5) on patch features.
- ``encoder_decoder.model``: the Transformer (``encoder``, ``decoder``, ``tgt_embed`` =
  embeddings + sinusoidal positions, ``rm`` = relational memory). Every decoder sublayer's
  layer norm is a ConditionalLayerNorm whose gain and bias get a delta computed from the
  relational memory's state at that position (MCLN).
- ``encoder_decoder.logit``: Linear(512 -> vocabulary + 1); id 0 is bos/eos/pad.

Numerics follow upstream where they matter to its weights: layer norms divide by
``std + eps`` with the unbiased std, embeddings are scaled by sqrt(d_model).

Generation is incremental (keys/values of earlier positions cached, the relational memory
carried as a recurrent state); upstream re-runs the decoder over the whole prefix at every
step, which gives the same numbers (the decoder is causal) at quadratic cost. A test checks
the two agree.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from boxmed_eval.errors import DataError

# ----------------------------------------------------------------------------- config


@dataclass
class R2GenConfig:
    """Hyper-parameters; the defaults are upstream's (``main_train.py``)."""

    dataset_name: str = "iu_xray"  # iu_xray: two views concatenated; mimic_cxr: one view
    vocab_size: int = 0  # words including <unk>; the model predicts vocab_size + 1 classes
    resnet_depth: int = 101
    resnet_width: int = 64  # torchvision's base width; smaller only for tiny test models
    d_model: int = 512
    d_ff: int = 512
    num_heads: int = 8
    num_layers: int = 3
    dropout: float = 0.1
    drop_prob_lm: float = 0.5  # dropout after att_embed
    rm_num_slots: int = 3
    rm_num_heads: int = 8
    rm_d_model: int = 512
    max_seq_length: int = 60  # tokens generated at most (IU 60, MIMIC 100)
    image_size: int = 224
    positional_max_len: int = 5000  # size of the `pe` buffer, part of the state dict

    def __post_init__(self) -> None:
        if self.rm_d_model != self.d_model:
            # Upstream's MCLN feeds a Linear(rm_d_model, rm_d_model) with d_model features,
            # and the memory reads d_model-sized embeddings: the two must be equal.
            raise DataError(f"rm_d_model ({self.rm_d_model}) must equal d_model ({self.d_model}) in R2Gen")
        if self.d_model % self.num_heads or self.d_model % self.rm_num_heads:
            raise DataError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads} "
                            f"and rm_num_heads {self.rm_num_heads}")
        if self.resnet_depth not in RESNET_LAYERS:
            raise DataError(f"resnet_depth {self.resnet_depth} not supported; use one of {sorted(RESNET_LAYERS)}")

    @property
    def d_vf(self) -> int:
        """Channels of the visual features (2048 for ResNet-101)."""
        block, _ = RESNET_LAYERS[self.resnet_depth]
        return self.resnet_width * 8 * block.expansion

    @property
    def num_views(self) -> int:
        return 2 if self.dataset_name == "iu_xray" else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "R2GenConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ----------------------------------------------------------------------------- ResNet (torchvision layout)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


RESNET_LAYERS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def resnet_trunk(depth: int = 101, width: int = 64) -> nn.Sequential:
    """``nn.Sequential(*list(torchvision.models.resnetD().children())[:-2])`` without torchvision:
    0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4; same parameter names and shapes."""
    block, counts = RESNET_LAYERS[depth]
    modules: list[nn.Module] = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    inplanes = width
    for stage, count in enumerate(counts):
        planes = width * 2 ** stage
        stride = 1 if stage == 0 else 2
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        blocks = [block(inplanes, planes, stride, downsample)]
        inplanes = planes * block.expansion
        blocks += [block(inplanes, planes) for _ in range(1, count)]
        modules.append(nn.Sequential(*blocks))
    trunk = nn.Sequential(*modules)
    for m in trunk.modules():  # torchvision's initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return trunk


_TORCHVISION_CHILD_INDEX = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}


def torchvision_to_trunk_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict (``conv1.weight``, ``layer1.0.conv1.weight``...,
    ``fc.*``) to the trunk's (``0.weight``, ``4.0.conv1.weight``...), dropping the classifier."""
    renamed = {}
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        if head == "fc":
            continue
        if head not in _TORCHVISION_CHILD_INDEX:
            raise DataError(f"unexpected key {key!r} for a torchvision ResNet state dict")
        renamed[f"{_TORCHVISION_CHILD_INDEX[head]}.{rest}"] = value
    return renamed


class VisualExtractor(nn.Module):
    def __init__(self, config: R2GenConfig) -> None:
        super().__init__()
        self.model = resnet_trunk(config.resnet_depth, config.resnet_width)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) -> patch features (B, h*w, C) and their mean (B, C)."""
        patch_feats = self.model(images)
        # Upstream pools with AvgPool2d(7), i.e. the mean of a 7x7 map at 224 px; the mean over
        # the map is the same number at 224 and also works at other sizes. It is unused by the
        # decoder (as upstream) and kept for feature export.
        avg_feats = patch_feats.mean(dim=(2, 3))
        batch_size, channels = patch_feats.shape[:2]
        return patch_feats.reshape(batch_size, channels, -1).permute(0, 2, 1), avg_feats

    def load_imagenet_weights(self, path: str | Path) -> None:
        """Load a torchvision-format ResNet checkpoint (e.g. ``resnet101-63fe2227.pth``)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        self.model.load_state_dict(torchvision_to_trunk_state_dict(state), strict=True)


# ----------------------------------------------------------------------------- Transformer pieces


def clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


def subsequent_mask(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, size, size) bool, True where position j <= i may be attended."""
    return torch.ones(1, size, size, dtype=torch.bool, device=device).tril()


class LayerNorm(nn.Module):
    """Upstream's layer norm: gamma * (x - mean) / (std + eps) + beta, unbiased std."""

    def __init__(self, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.gamma * (x - mean) / (std + self.eps) + self.beta


class ConditionalLayerNorm(nn.Module):
    """Memory-driven conditional layer norm (MCLN): gain and bias shifted by MLPs of the
    relational memory state at the same position."""

    def __init__(self, d_model: int, rm_num_slots: int, rm_d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d_model))
        self.beta = nn.Parameter(torch.zeros(d_model))
        self.eps = eps
        # Upstream's second gamma layer is Linear(rm_d_model, rm_d_model) (needs rm_d_model == d_model).
        self.mlp_gamma = nn.Sequential(nn.Linear(rm_num_slots * rm_d_model, d_model), nn.ReLU(inplace=True),
                                       nn.Linear(rm_d_model, rm_d_model))
        self.mlp_beta = nn.Sequential(nn.Linear(rm_num_slots * rm_d_model, d_model), nn.ReLU(inplace=True),
                                      nn.Linear(d_model, d_model))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0.1)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x (B, T, d), memory (B, T, slots * d)."""
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        gamma = self.gamma + self.mlp_gamma(memory)
        beta = self.beta + self.mlp_beta(memory)
        return gamma * (x - mean) / (std + self.eps) + beta


class MultiHeadedAttention(nn.Module):
    """``linears`` 0-2 project query/key/value, 3 the output (upstream's names)."""

    def __init__(self, h: int, d_model: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.d_k = d_model // h
        self.h = h
        self.linears = clones(nn.Linear(d_model, d_model), 4)
        self.dropout = nn.Dropout(p=dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1, self.h, self.d_k).transpose(1, 2)

    def project_key_value(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, h, T, d_k) keys and values, cacheable across decoding steps."""
        return self._split(self.linears[1](key)), self._split(self.linears[2](value))

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Tq, d) against projected key/value; mask (B or 1, Tq or 1, Tk) bool/0-1."""
        q = self._split(self.linears[0](query))
        scores = torch.matmul(q, key.transpose(-2, -1)) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(mask.unsqueeze(1) == 0, -1e9)
        p_attn = self.dropout(F.softmax(scores, dim=-1))
        x = torch.matmul(p_attn, value).transpose(1, 2).contiguous().view(query.size(0), -1, self.h * self.d_k)
        return self.linears[3](x)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.project_key_value(key, value)
        return self.attend(query, k, v, mask)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class SublayerConnection(nn.Module):
    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        self.norm = LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return x + self.dropout(sublayer(self.norm(x)))


class ConditionalSublayerConnection(nn.Module):
    def __init__(self, d_model: int, dropout: float, rm_num_slots: int, rm_d_model: int) -> None:
        super().__init__()
        self.norm = ConditionalLayerNorm(d_model, rm_num_slots, rm_d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor],
                memory: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(sublayer(self.norm(x, memory)))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, self_attn: MultiHeadedAttention, feed_forward: PositionwiseFeedForward,
                 dropout: float) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(d_model, dropout), 2)
        self.d_model = d_model

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.sublayer[0](x, lambda y: self.self_attn(y, y, y, mask))
        return self.sublayer[1](x, self.feed_forward)


class Encoder(nn.Module):
    def __init__(self, layer: EncoderLayer, n: int) -> None:
        super().__init__()
        self.layers = clones(layer, n)
        self.norm = LayerNorm(layer.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, self_attn: MultiHeadedAttention, src_attn: MultiHeadedAttention,
                 feed_forward: PositionwiseFeedForward, dropout: float, rm_num_slots: int, rm_d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.self_attn = self_attn
        self.src_attn = src_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(ConditionalSublayerConnection(d_model, dropout, rm_num_slots, rm_d_model), 3)

    def forward(self, x: torch.Tensor, hidden_states: torch.Tensor, src_mask: torch.Tensor | None,
                tgt_mask: torch.Tensor | None, memory: torch.Tensor) -> torch.Tensor:
        x = self.sublayer[0](x, lambda y: self.self_attn(y, y, y, tgt_mask), memory)
        x = self.sublayer[1](x, lambda y: self.src_attn(y, hidden_states, hidden_states, src_mask), memory)
        return self.sublayer[2](x, self.feed_forward, memory)

    def step(self, x: torch.Tensor, memory: torch.Tensor, cache: dict[str, torch.Tensor],
             src_key: torch.Tensor, src_value: torch.Tensor) -> torch.Tensor:
        """One new position: x (N, 1, d), memory (N, 1, slots*d); appends this position's
        self-attention key/value to ``cache``."""
        normed = self.sublayer[0].norm(x, memory)
        k, v = self.self_attn.project_key_value(normed, normed)
        if "k" in cache:
            k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
        cache["k"], cache["v"] = k, v
        x = x + self.sublayer[0].dropout(self.self_attn.attend(normed, k, v))
        x = self.sublayer[1](x, lambda y: self.src_attn.attend(y, src_key, src_value), memory)
        return self.sublayer[2](x, self.feed_forward, memory)


class Decoder(nn.Module):
    def __init__(self, layer: DecoderLayer, n: int) -> None:
        super().__init__()
        self.layers = clones(layer, n)
        self.norm = LayerNorm(layer.d_model)

    def forward(self, x: torch.Tensor, hidden_states: torch.Tensor, src_mask: torch.Tensor | None,
                tgt_mask: torch.Tensor | None, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, hidden_states, src_mask, tgt_mask, memory)
        return self.norm(x)


class Embeddings(nn.Module):
    def __init__(self, d_model: int, vocab: int) -> None:
        super().__init__()
        self.lut = nn.Embedding(vocab, d_model)
        self.d_model = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lut(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(0, max_len).unsqueeze(1).float()
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0))  # persistent: upstream checkpoints hold it

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return self.dropout(x + self.pe[:, offset:offset + x.size(1)])


class RelationalMemory(nn.Module):
    """Slots updated at every decoding step by attending over [slots; current word] and
    gated like an LSTM (input and forget gates)."""

    def __init__(self, num_slots: int, d_model: int, num_heads: int = 1) -> None:
        super().__init__()
        self.num_slots = num_slots
        self.d_model = d_model
        self.attn = MultiHeadedAttention(num_heads, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model), nn.ReLU())
        self.W = nn.Linear(d_model, d_model * 2)
        self.U = nn.Linear(d_model, d_model * 2)

    def init_memory(self, batch_size: int) -> torch.Tensor:
        """Identity rows padded with zeros: (B, slots, d)."""
        memory = torch.eye(self.num_slots).unsqueeze(0).expand(batch_size, -1, -1)
        if self.d_model > self.num_slots:
            memory = torch.cat([memory, torch.zeros(batch_size, self.num_slots, self.d_model - self.num_slots)], -1)
        else:
            memory = memory[:, :, :self.d_model]
        return memory.contiguous()

    def forward_step(self, inputs: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """inputs (B, d), memory (B, slots*d or slots, d) -> next memory (B, slots*d)."""
        memory = memory.reshape(-1, self.num_slots, self.d_model)
        keys = torch.cat([memory, inputs.unsqueeze(1)], 1)
        next_memory = memory + self.attn(memory, keys, keys)
        next_memory = next_memory + self.mlp(next_memory)
        gates = self.W(inputs.unsqueeze(1)) + self.U(torch.tanh(memory))
        input_gate, forget_gate = torch.split(gates, self.d_model, dim=2)
        next_memory = torch.sigmoid(input_gate) * torch.tanh(next_memory) + torch.sigmoid(forget_gate) * memory
        return next_memory.reshape(-1, self.num_slots * self.d_model)

    def forward(self, inputs: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """inputs (B, T, d) -> memory after each step (B, T, slots*d)."""
        outputs = []
        for i in range(inputs.shape[1]):
            memory = self.forward_step(inputs[:, i], memory)
            outputs.append(memory)
        return torch.stack(outputs, dim=1)


class Transformer(nn.Module):
    """``encoder``, ``decoder``, ``tgt_embed`` (Sequential(Embeddings, PositionalEncoding)),
    ``rm``; upstream's ``src_embed`` is the identity and holds no parameters."""

    def __init__(self, encoder: Encoder, decoder: Decoder, tgt_embed: nn.Sequential, rm: RelationalMemory) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.tgt_embed = tgt_embed
        self.rm = rm

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        return self.encoder(src, src_mask)

    def decode(self, hidden_states: torch.Tensor, src_mask: torch.Tensor | None, tgt: torch.Tensor,
               tgt_mask: torch.Tensor | None) -> torch.Tensor:
        embedded = self.tgt_embed(tgt)
        memory = self.rm(embedded, self.rm.init_memory(hidden_states.size(0)).to(hidden_states))
        return self.decoder(embedded, hidden_states, src_mask, tgt_mask, memory)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None,
                tgt_mask: torch.Tensor | None) -> torch.Tensor:
        return self.decode(self.encode(src, src_mask), src_mask, tgt, tgt_mask)


class EncoderDecoder(nn.Module):
    def __init__(self, config: R2GenConfig) -> None:
        super().__init__()
        c = copy.deepcopy
        d, tgt_vocab = config.d_model, config.vocab_size + 1
        self.att_embed = nn.Sequential(nn.Linear(config.d_vf, d), nn.ReLU(), nn.Dropout(config.drop_prob_lm))
        attn = MultiHeadedAttention(config.num_heads, d)
        ff = PositionwiseFeedForward(d, config.d_ff, config.dropout)
        position = PositionalEncoding(d, config.dropout, config.positional_max_len)
        rm = RelationalMemory(config.rm_num_slots, config.rm_d_model, config.rm_num_heads)
        self.model = Transformer(
            Encoder(EncoderLayer(d, c(attn), c(ff), config.dropout), config.num_layers),
            Decoder(DecoderLayer(d, c(attn), c(attn), c(ff), config.dropout, config.rm_num_slots, config.rm_d_model),
                    config.num_layers),
            nn.Sequential(Embeddings(d, tgt_vocab), c(position)),
            rm)
        for p in self.model.parameters():  # upstream re-initialises every matrix after building
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.logit = nn.Linear(d, tgt_vocab)

    def encode(self, att_feats: torch.Tensor) -> torch.Tensor:
        """Patch features (B, N, d_vf) -> encoder hidden states (B, N, d). No mask: every
        study has the same number of patches."""
        return self.model.encode(self.att_embed(att_feats), None)

    def forward(self, att_feats: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: seq (B, T) = [0, w1.., 0, pad..] -> log-probs (B, T-1, V+1)."""
        seq = seq[:, :-1]
        seq_mask = seq > 0
        seq_mask[:, 0] = True  # position 0 is bos (id 0), never padding
        seq_mask = seq_mask.unsqueeze(-2) & subsequent_mask(seq.size(-1), seq.device)
        out = self.model(self.att_embed(att_feats), seq, None, seq_mask)
        return F.log_softmax(self.logit(out), dim=-1)

    # -- incremental decoding ---------------------------------------------------------

    def start_decoding(self, hidden_states: torch.Tensor) -> dict[str, Any]:
        """State for ``decode_step``: per-layer source keys/values, empty self-attention
        caches, the relational memory's initial slots."""
        layers = self.model.decoder.layers
        return {
            "src": [layer.src_attn.project_key_value(hidden_states, hidden_states) for layer in layers],
            "cache": [{} for _ in layers],
            "memory": self.model.rm.init_memory(hidden_states.size(0)).to(hidden_states)
                      .reshape(hidden_states.size(0), -1),
            "position": 0,
        }

    def decode_step(self, last_tokens: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Log-probabilities of the next token given the last one (N,) -> (N, V+1)."""
        embeddings, positions = self.model.tgt_embed
        x = positions(embeddings(last_tokens.unsqueeze(1)), offset=state["position"])
        memory = self.model.rm.forward_step(x[:, 0], state["memory"])
        conditioning = memory.unsqueeze(1)
        for layer, cache, (src_k, src_v) in zip(self.model.decoder.layers, state["cache"], state["src"]):
            x = layer.step(x, conditioning, cache, src_k, src_v)
        out = self.model.decoder.norm(x)[:, 0]
        state["memory"] = memory
        state["position"] += 1
        return F.log_softmax(self.logit(out), dim=-1), state

    @staticmethod
    def reorder_state(state: dict[str, Any], index: torch.Tensor) -> dict[str, Any]:
        """Keep rows ``index`` of the per-hypothesis parts. Source keys/values are equal across
        the beams of a study and beams never move between studies, so they stay."""
        state["memory"] = state["memory"].index_select(0, index)
        for cache in state["cache"]:
            for key in list(cache):
                cache[key] = cache[key].index_select(0, index)
        return state

    @staticmethod
    def repeat_state(state: dict[str, Any], times: int) -> dict[str, Any]:
        """Each study's rows repeated ``times`` (consecutive), for beam search."""
        def rep(t: torch.Tensor) -> torch.Tensor:
            return t.repeat_interleave(times, dim=0)
        state["src"] = [(rep(k), rep(v)) for k, v in state["src"]]
        state["memory"] = rep(state["memory"])
        state["cache"] = [{k: rep(v) for k, v in cache.items()} for cache in state["cache"]]
        return state


class R2GenModel(nn.Module):
    """``visual_extractor`` + ``encoder_decoder``, as upstream's ``models/r2gen.py``."""

    def __init__(self, config: R2GenConfig) -> None:
        super().__init__()
        if config.vocab_size <= 0:
            raise DataError("R2GenConfig.vocab_size is not set", fix="build the model from a tokenizer's vocab_size")
        self.config = config
        self.visual_extractor = VisualExtractor(config)
        self.encoder_decoder = EncoderDecoder(config)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, views, 3, H, W) -> patch features (B, views*h*w, d_vf); views are
        concatenated along the patch axis (IU X-Ray: frontal + lateral)."""
        if images.dim() == 4:
            images = images.unsqueeze(1)
        views = images.shape[1]
        if views != self.config.num_views:
            raise DataError(f"{self.config.dataset_name} model expects {self.config.num_views} view(s) per study, "
                            f"got {views}")
        # One pass per view, as upstream: in training, BatchNorm statistics are then per view
        # (frontal and lateral images differ), not pooled over both.
        return torch.cat([self.visual_extractor(images[:, view])[0] for view in range(views)], dim=1)

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.encoder_decoder(self.image_features(images), targets)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, *, beam_size: int = 3, max_length: int | None = None,
                 block_trigrams: bool = True) -> torch.Tensor:
        """Token ids (B, L) without bos, 0-padded after the end. ``beam_size`` 1 is greedy."""
        from plugins.r2gen.decoding import beam_search, greedy_search

        max_length = max_length or self.config.max_seq_length
        hidden = self.encoder_decoder.encode(self.image_features(images))
        state = self.encoder_decoder.start_decoding(hidden)
        batch_size = hidden.size(0)

        def step(tokens: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
            return self.encoder_decoder.decode_step(tokens[:, -1], state)

        if beam_size <= 1:
            return greedy_search(step, state, batch_size=batch_size, max_length=max_length,
                                 block_trigrams=block_trigrams, reorder=self.encoder_decoder.reorder_state,
                                 device=hidden.device)
        state = self.encoder_decoder.repeat_state(state, beam_size)
        return beam_search(step, state, batch_size=batch_size, beam_size=beam_size, max_length=max_length,
                           block_trigrams=block_trigrams, reorder=self.encoder_decoder.reorder_state,
                           device=hidden.device).sequences


def strip_data_parallel_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upstream wraps the model in DataParallel with several GPUs: keys then start 'module.'."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict
