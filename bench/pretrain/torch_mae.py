"""The PyTorch peer of bench/pretrain: MAE's asymmetric ViT (the structure of
facebookresearch/mae models_mae.py, written here from the paper and SPEC §2) with the K-MIM head
(decoder_pred to K logits, cross-entropy on the masked patches), one training step timed as
kmim's bench_pretrain_step times its own: zero_grad, forward, backward, AdamW step.

    python torch_mae.py PRESET BATCH THREADS STEPS WARMUP [OUT_DIM]

Prints one JSON line (images/s, losses, peak RSS, torch version and CPU capability).
"""
import json
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {  # img patch dim depth heads dec_dim dec_depth dec_heads out_dim (kmim's presets)
    "vit_tiny_demo": (32, 4, 64, 4, 4, 32, 2, 2, 256),
    "vit_tiny": (224, 16, 192, 12, 3, 128, 4, 4, 1024),
    "vit_small": (224, 16, 384, 12, 6, 256, 8, 8, 1024),
    "vit_base": (224, 16, 768, 12, 12, 512, 8, 16, 1024),
}


def sincos_2d(dim, grid):
    """Fixed 2-D sin-cos position table [1 + grid^2, dim] (row 0 for CLS is zeros)."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1, 1).double() * omega.reshape(1, -1)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)
    coords = torch.arange(grid, dtype=torch.float64)
    row = coords.repeat_interleave(grid)  # h index of patch i = row-major
    col = coords.repeat(grid)             # w index
    emb = torch.cat([one_d(dim // 2, col), one_d(dim // 2, row)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb], dim=0).float()


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        # timm's Attention with fused_attn (its default): scaled_dot_product_attention.
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class MaskedAutoencoder(nn.Module):
    def __init__(self, img, patch, dim, depth, heads, ddim, ddepth, dheads, out_dim, mask_ratio=0.75):
        super().__init__()
        self.patch, self.mask_ratio = patch, mask_ratio
        grid = img // patch
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, grid).unsqueeze(0))
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.register_buffer("decoder_pos_embed", sincos_2d(ddim, grid).unsqueeze(0))
        self.decoder_blocks = nn.ModuleList([Block(ddim, dheads) for _ in range(ddepth)])
        self.decoder_norm = nn.LayerNorm(ddim, eps=1e-6)
        self.decoder_pred = nn.Linear(ddim, out_dim)
        torch.nn.init.normal_(self.cls_token, std=0.02)
        torch.nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                torch.nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, imgs, noise, targets):
        x = self.patch_embed(imgs).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        b, l, d = x.shape
        keep = int(l * (1 - self.mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
        mask = torch.ones(b, l)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        dd = x.shape[2]
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(b, l - keep, -1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore[:, :, None].expand(-1, -1, dd))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        logits = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        ce = F.cross_entropy(logits.reshape(b * l, -1), targets.reshape(-1), reduction="none")
        return (ce * mask.reshape(-1)).sum() / mask.sum()


def main():
    preset, batch, threads, steps, warmup = sys.argv[1], *map(int, sys.argv[2:6])
    img, patch, dim, depth, heads, ddim, ddepth, dheads, out_dim = PRESETS[preset]
    if len(sys.argv) > 6:
        out_dim = int(sys.argv[6])
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    model = MaskedAutoencoder(img, patch, dim, depth, heads, ddim, ddepth, dheads, out_dim)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.endswith(".bias"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95))
    l = (img // patch) ** 2
    imgs = torch.randn(batch, 3, img, img)
    noise = torch.rand(batch, l)
    targets = torch.randint(0, out_dim, (batch, l))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(imgs, noise, targets)
        loss.backward()
        opt.step()
        return loss.item()

    first = last = 0.0
    for _ in range(warmup):
        first = step()
    t0 = time.perf_counter()
    for _ in range(steps):
        last = step()
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"impl": "torch", "model": preset, "batch": batch, "threads": threads, "steps": steps,
                      "images_per_second": round(steps * batch / seconds, 2),
                      "step_ms": round(1e3 * seconds / steps, 3), "first_loss": round(first, 5),
                      "last_loss": round(last, 5), "peak_rss_mb": round(rss, 1),
                      "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "mkldnn": torch.backends.mkldnn.is_available(), "log_k": round(math.log(out_dim), 5)}))


if __name__ == "__main__":
    main()
