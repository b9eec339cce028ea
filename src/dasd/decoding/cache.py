"""A KV cache that appends in place: the engines' cache for long, token-by-token decoding.

transformers' `DynamicLayer` grows by `torch.cat`, which copies a layer's whole cache at
every step: on a CPU that copy is a sixth of a batch-16 decode's time and grows with the
response. `GrowingLayer` keeps each full-attention layer in a buffer with spare room,
writes new columns into it and hands attention a view of the filled part; cropping
(draft-and-verify's rollback) only moves the fill mark. When the room runs out the buffer
grows by a quarter of what it holds (at least `room` columns), so copies are rare and the
spare memory stays small: long `max_new_tokens` budgets are not reserved up front, as a
static cache would. Sliding-window and other special layers keep transformers' own class,
unless asked (`sliding=True`, for the step engine, whose attention masks apply the window).

The step engine's continuous batching needs a few row operations more, none of which
copies the whole cache: `write_rows` puts a newly prefilled example into freed rows, as
their last columns (every row's tokens end at the fill mark); `widen` and `trim` add or
drop columns on the left (where only masked columns lie); `move_rows` and `keep_rows`
close the gaps finished examples leave.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer


class GrowingLayer(DynamicLayer):
    """`DynamicLayer` with in-place appends into a buffer with `room` spare columns or more.

    The visible columns are `[start, filled)` of the buffer: `trim` moves `start` right,
    appends and `crop` move `filled`."""

    def __init__(self, room: int = 256, **kwargs) -> None:
        super().__init__(**kwargs)
        if room < 1:
            raise ValueError(f"room must be >= 1; got {room}")
        self.room = room
        self.start = self.filled = 0
        self._key_buffer = self._value_buffer = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.reserve(key_states.shape[0], 0, key_states, value_states,
                     spare=key_states.shape[-2] + self.room)

    def reserve(self, rows: int, columns: int, like_keys: torch.Tensor,
                like_values: torch.Tensor, spare: int | None = None) -> None:
        """Start over as `rows` rows of `columns` zero columns (shaped and typed like the
        given states), with `spare` more columns of room (default `room`)."""
        self.device = like_keys.device
        total = columns + (self.room if spare is None else spare)
        self._key_buffer = self._allocate(like_keys, rows, total)
        self._value_buffer = self._allocate(like_values, rows, total)
        self._key_buffer[..., :columns, :] = 0
        self._value_buffer[..., :columns, :] = 0
        self.start, self.filled = 0, columns
        self.is_initialized = True
        self._expose()

    @staticmethod
    def _allocate(like: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
        _, *heads, _, width = like.shape
        return like.new_empty((rows, *heads, columns, width))

    def _grow(self, needed: int) -> None:
        """Reallocate for `needed` visible columns and room; the visible part moves to 0."""
        columns = needed + max(self.room, needed // 4)
        visible = self.filled - self.start
        for name in ("_key_buffer", "_value_buffer"):
            old = getattr(self, name)
            new = self._allocate(old, old.shape[0], columns)
            new[..., :visible, :] = old[..., self.start:self.filled, :]
            setattr(self, name, new)
        self.start, self.filled = 0, visible

    def _expose(self) -> None:
        self.keys = self._key_buffer[..., self.start:self.filled, :]
        self.values = self._value_buffer[..., self.start:self.filled, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.filled + key_states.shape[-2] > self._key_buffer.shape[-2]:
            self._grow(self.filled - self.start + key_states.shape[-2])
        end = self.filled + key_states.shape[-2]
        self._key_buffer[..., self.filled:end, :] = key_states
        self._value_buffer[..., self.filled:end, :] = value_states
        self.filled = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.filled - self.start if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of columns to remove; "
                             f"got {tokens_to_remove}")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        self.filled = max(self.filled + tokens_to_remove, self.start)
        self._expose()

    def trim(self, columns: int) -> None:
        """Forget the first `columns` visible columns (no row attends to them any more)."""
        if self.is_initialized and columns > 0:
            self.start = min(self.start + columns, self.filled)
            self._expose()

    def widen(self, columns: int) -> None:
        """Add `columns` zero columns before the visible ones (for a longer prompt)."""
        if not self.is_initialized or columns <= 0:
            return
        if self.start < columns:  # no room on the left: reallocate, the visible part after
            visible = self.filled - self.start
            total = columns + visible + max(self.room, (columns + visible) // 4)
            for name in ("_key_buffer", "_value_buffer"):
                old = getattr(self, name)
                new = self._allocate(old, old.shape[0], total)
                new[..., columns:columns + visible, :] = old[..., self.start:self.filled, :]
                setattr(self, name, new)
            self.start, self.filled = columns, columns + visible
        self.start -= columns
        for buffer in (self._key_buffer, self._value_buffer):
            buffer[..., self.start:self.start + columns, :] = 0
        self._expose()

    def write_rows(self, rows: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Make `keys`/`values` [len(rows), heads, L, dim] the last L visible columns of
        rows `rows` (L must not exceed the visible columns: `widen` first)."""
        length = keys.shape[-2]
        if length > self.filled - self.start:
            raise ValueError(f"{length} columns do not fit in {self.filled - self.start}: "
                             "widen the cache first")
        if length:
            columns = slice(self.filled - length, self.filled)
            self._key_buffer[rows, :, columns] = keys
            self._value_buffer[rows, :, columns] = values

    def move_rows(self, source: torch.Tensor, target: torch.Tensor) -> None:
        """Copy the visible columns of rows `source` into rows `target`."""
        if self.is_initialized and len(source):
            columns = slice(self.start, self.filled)
            for buffer in (self._key_buffer, self._value_buffer):
                buffer[target, :, columns] = buffer[source, :, columns]

    def keep_rows(self, count: int) -> None:
        """Keep the first `count` rows (a view: nothing is copied)."""
        if self.is_initialized:
            self._key_buffer = self._key_buffer[:count]
            self._value_buffer = self._value_buffer[:count]
            self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:  # the visible columns and the room after them
            self._key_buffer = self._key_buffer[indices, :, self.start:]
            self._value_buffer = self._value_buffer[indices, :, self.start:]
            self.start, self.filled = 0, self.filled - self.start
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
        self.start = self.filled = 0
        super().reset()


def growing_cache(model, room: int = 256, sliding: bool = False) -> DynamicCache:
    """The model's `DynamicCache` with every plain full-attention layer made a
    `GrowingLayer` (`room`: spare columns beyond the prompt, and the least it grows by).

    `sliding=True` makes sliding-window layers full `GrowingLayer`s too: they then keep
    every column, and the model's sliding-window attention mask (built from column
    indices, which are token distances when every row's tokens are contiguous) hides the
    ones outside the window. Other special layers keep their class either way."""
    cache = DynamicCache(config=model.config)
    kinds = (DynamicLayer, DynamicSlidingWindowLayer) if sliding else (DynamicLayer,)
    cache.layers = [GrowingLayer(room) if type(layer) in kinds else layer
                    for layer in cache.layers]
    return cache


def generation_cache(model, room: int = 256) -> DynamicCache | None:
    """A `growing_cache` for `model.generate`, or None (generate's own choice) for models
    whose generation does not run on a `DynamicCache` (encoder-decoders, custom caches)."""
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    if supports is None or not supports() or getattr(model.config, "is_encoder_decoder", False):
        return None
    return growing_cache(model, room)
