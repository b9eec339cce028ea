"""A KV cache that appends in place: the engines' cache for long, token-by-token decoding.

transformers' `DynamicLayer` grows by `torch.cat`, which copies a layer's whole cache at
every step: on a CPU that copy is a sixth of a batch-16 decode's time and grows with the
response. `GrowingLayer` keeps each full-attention layer in a buffer with spare room,
writes new columns into it and hands attention a view of the filled part; cropping
(draft-and-verify's rollback) only moves the fill mark. When the room runs out the buffer
grows by a quarter of what it holds (at least `room` columns), so copies are rare and the
spare memory stays small: long `max_new_tokens` budgets are not reserved up front, as a
static cache would. Sliding-window and other special layers keep transformers' own class.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """`DynamicLayer` with in-place appends into a buffer with `room` spare columns or more."""

    def __init__(self, room: int = 256, **kwargs) -> None:
        super().__init__(**kwargs)
        if room < 1:
            raise ValueError(f"room must be >= 1; got {room}")
        self.room = room
        self.filled = 0
        self._key_buffer = self._value_buffer = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.filled = 0
        self._key_buffer = self._allocate(key_states, key_states.shape[-2] + self.room)
        self._value_buffer = self._allocate(value_states, value_states.shape[-2] + self.room)
        self.is_initialized = True

    @staticmethod
    def _allocate(like: torch.Tensor, columns: int) -> torch.Tensor:
        *lead, _, width = like.shape
        return like.new_empty((*lead, columns, width))

    def _grow(self, needed: int) -> None:
        columns = needed + max(self.room, needed // 4)
        for name in ("_key_buffer", "_value_buffer"):
            old = getattr(self, name)
            new = self._allocate(old, columns)
            new[..., : self.filled, :] = old[..., : self.filled, :]
            setattr(self, name, new)

    def _expose(self) -> None:
        self.keys = self._key_buffer[..., : self.filled, :]
        self.values = self._value_buffer[..., : self.filled, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.filled + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            self._grow(end)
        self._key_buffer[..., self.filled:end, :] = key_states
        self._value_buffer[..., self.filled:end, :] = value_states
        self.filled = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.filled if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of columns to remove; "
                             f"got {tokens_to_remove}")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        self.filled = max(self.filled + tokens_to_remove, 0)
        self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._key_buffer = self._key_buffer[indices]
            self._value_buffer = self._value_buffer[indices]
            self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self._key_buffer = self._key_buffer.repeat_interleave(repeats, dim=0)
            self._value_buffer = self._value_buffer.repeat_interleave(repeats, dim=0)
            self._expose()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx.to(self.device))

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        self.filled = 0
        super().reset()


def growing_cache(model, room: int = 256) -> DynamicCache:
    """The model's `DynamicCache` with every plain full-attention layer made a
    `GrowingLayer` (`room`: spare columns beyond the prompt, and the least it grows by)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingLayer(room) if type(layer) is DynamicLayer else layer
                    for layer in cache.layers]
    return cache


def generation_cache(model, room: int = 256) -> DynamicCache | None:
    """A `growing_cache` for `model.generate`, or None (generate's own choice) for models
    whose generation does not run on a `DynamicCache` (encoder-decoders, custom caches)."""
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    if supports is None or not supports() or getattr(model.config, "is_encoder_decoder", False):
        return None
    return growing_cache(model, room)
