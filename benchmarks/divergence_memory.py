"""Memory of the on-policy divergence: chunked over positions against one pass, in one process.

    python benchmarks/divergence_memory.py                      # Qwen3's vocabulary, 2 x 512
    python benchmarks/divergence_memory.py --rows 4 --length 1024 --device cuda

Builds random student and teacher logits `[rows, length, vocab]` (float32; the student's
with a gradient, as training has them), then runs OPSD's loss (clipped generalized JSD,
beta 0.5) forward and backward twice: in one pass over every position (`CHUNK_ENTRIES`
unbounded) and chunked (`dasd.training.losses.per_position`, the default). For each it
prints the memory the loss added above the logits it was given (on CPU the resident
peak, chunked first so that each run raises the process's high-water mark and is read
exactly; on a GPU the CUDA allocator's peak), the seconds it took, and the ratios of the
chunked run to the one pass. Both losses and gradients are compared too.
"""

from __future__ import annotations

import argparse
import time

import torch

from dasd.memory import lifetime_peak_mb, release_free_memory, resident_mb
from dasd.training import losses


def measure(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
            entries: int) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """(MB added above the inputs, seconds, loss, gradient) of one forward and backward."""
    losses.CHUNK_ENTRIES = entries
    student.grad = None
    release_free_memory()
    cuda = student.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = resident_mb() or 0.0
    start = time.perf_counter()
    loss = losses.opsd_loss(student, teacher, mask, 0.5, 0.05)
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = lifetime_peak_mb()
    return peak - before, time.perf_counter() - start, loss.detach(), student.grad.clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=151_936)  # Qwen3's
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = (args.rows, args.length, args.vocab)
    student = torch.randn(shape, device=args.device).mul_(3).requires_grad_()
    teacher = torch.randn(shape, device=args.device).mul_(3)
    mask = torch.ones(shape[:2], device=args.device)
    logits_mb = student.numel() * 4 / 2**20
    chunk_entries = losses.CHUNK_ENTRIES
    chunked = measure(student, teacher, mask, chunk_entries)  # lower peak first (see above)
    whole = measure(student, teacher, mask, 2**62)
    print(f"logits {list(shape)} float32 on {args.device}: {logits_mb:,.0f} MB each "
          f"(student, teacher); chunks of {max(1, chunk_entries // args.vocab)} positions")
    print(f"{'pass':<10}{'added MB':>12}{'x logits':>10}{'seconds':>10}")
    for name, (added, seconds, _, _) in (("one pass", whole), ("chunked", chunked)):
        print(f"{name:<10}{added:>12,.0f}{added / logits_mb:>10.2f}{seconds:>10.2f}")
    print(f"chunked / one pass: memory {chunked[0] / whole[0]:.3f}, time "
          f"{chunked[1] / whole[1]:.2f}")
    same_loss = torch.allclose(chunked[2], whole[2], rtol=1e-6)
    same_grad = torch.allclose(chunked[3], whole[3], rtol=1e-5, atol=1e-9)
    print(f"same loss: {same_loss}; same gradient: {same_grad} "
          f"(loss {whole[2].item():.6f} vs {chunked[2].item():.6f})")


if __name__ == "__main__":
    main()
