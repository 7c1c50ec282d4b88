#!/usr/bin/env python3
"""Checks tools/convert_timm_vit.py against a PyTorch reference ViT (run by test_convert_timm_vit.sh).

    convert_timm_vit_check.py CONVERTER TOKENS_HELPER BIN_DIR WORK_DIR [MANIFEST]

A small timm-style ViT (pre-norm blocks with a fused qkv, LayerNorm eps 1e-6, exact GELU, learned
pos_embed), RANDOMLY initialised, is saved in the DINO, DeiT and timm layouts, converted, and run
through kmim's encoder (kmim_test_encoder_tokens: eval::load_frozen_encoder + encoder_forward);
the final-LayerNorm tokens must match the reference forward within fp32 tolerance. With a
manifest, kmim_extract's CLS and patch features of the stored images are checked against the
reference on the same centre crops. A real-size ViT-S/16 is converted and its shapes checked.
"""

import contextlib
import importlib.util
import io
import os
import subprocess
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn

torch.manual_seed(0)
RTOL = 1e-4  # max |kmim - torch| / max(1, max |torch|)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, qkv_bias):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, channels, dim):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)


class ViT(nn.Module):
    def __init__(self, img=32, patch=8, dim=64, depth=2, heads=4, mlp_ratio=4, qkv_bias=True,
                 classes=10, distilled=False):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, 3, dim)
        grid = img // patch
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.dist_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5) if distilled else None
        prefix = 2 if distilled else 1
        self.pos_embed = nn.Parameter(torch.randn(1, prefix + grid * grid, dim) * 0.5)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)
        with torch.no_grad():  # LayerNorms away from (1, 0), so a mixed-up tensor would show
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.add_(torch.randn_like(m.weight) * 0.2)
                    m.bias.add_(torch.randn_like(m.bias) * 0.2)

    def tokens(self, x):
        """Final-LayerNorm tokens [B, 1 + L, D] (the distillation token dropped)."""
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat(prefix + [x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return torch.cat([x[:, :1], x[:, len(prefix):]], dim=1)


def run(cmd, expect=0):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != expect:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {r.returncode} (expected {expect}):\n{r.stdout}{r.stderr}")
    return r.stdout + r.stderr


CONVERTER = None


def convert(args, expect=0):
    """Runs the converter's main() in this process (one torch import for all conversions)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = CONVERTER.main(["convert_timm_vit.py"] + args)
    text = out.getvalue() + err.getvalue()
    if rc != expect:
        sys.exit(f"FAIL: convert_timm_vit.py {' '.join(args)} returned {rc} (expected {expect}):\n{text}")
    return text


def compare(name, ours, ref):
    ref = np.asarray(ref, np.float32)
    err = np.abs(ours - ref).max() / max(1.0, np.abs(ref).max())
    print(f"{name}: max relative difference {err:.2e} over {ref.size} values")
    if not err <= RTOL:
        sys.exit(f"FAIL: {name}: kmim and PyTorch differ by {err:.3e} > {RTOL}")


def check_tokens(name, model, ckpt, helper, work, img, count=3):
    """kmim tokens of `count` random normalised images vs the reference."""
    x = torch.randn(count, 3, img, img)
    with torch.no_grad():
        ref = model.tokens(x).numpy()
    inp = os.path.join(work, name + "_in.h5")
    out = os.path.join(work, name + "_tokens.h5")
    with h5py.File(inp, "w") as f:
        f["images"] = x.permute(0, 2, 3, 1).contiguous().numpy()
    run([helper, ckpt, inp, out])
    with h5py.File(out, "r") as f:
        ours = f["tokens"][:]
    if ours.shape != ref.shape:
        sys.exit(f"FAIL: {name}: kmim tokens {ours.shape}, reference {ref.shape}")
    compare(name, ours, ref)


def main():
    global CONVERTER
    converter, helper, bindir, work = sys.argv[1:5]
    manifest = sys.argv[5] if len(sys.argv) > 5 else ""
    spec = importlib.util.spec_from_file_location("convert_timm_vit", converter)
    CONVERTER = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(CONVERTER)
    py = sys.executable
    os.makedirs(work, exist_ok=True)
    p = lambda f: os.path.join(work, f)  # noqa: E731

    # timm layout: a plain state dict; 4 heads (not stored in weights: --num-heads).
    timm = ViT(img=32, patch=8, dim=64, depth=2, heads=4).eval()
    torch.save(timm.state_dict(), p("timm.pth"))
    out = convert([p("timm.pth"), p("timm.h5"), "--num-heads", "4"])
    assert "img 32 patch 8 D 64 depth 2 heads 4" in out, out
    check_tokens("timm", timm, p("timm.h5"), helper, work, 32)
    with h5py.File(p("timm.h5"), "r") as f:
        w = f["model/patch_embed.proj.weight"][:]
        conv = timm.patch_embed.proj.weight.detach().numpy()  # [D, C, P, P]
        # column (row, col, channel) = conv[:, channel, row, col]
        assert np.array_equal(w[:, (2 * 8 + 5) * 3 + 1], conv[:, 1, 2, 5]), "patch-embed permutation"
        assert f.attrs["encoder_only"] == 1 and f["model/pos_embed"].shape == (1, 17, 64)

    # DINO layout: a full training checkpoint, teacher and student with module./backbone. prefixes
    # and a DINO projection head; the teacher is converted by default, --which student on request.
    teacher = ViT(img=48, patch=16, dim=48, depth=2, heads=3).eval()
    student = ViT(img=48, patch=16, dim=48, depth=2, heads=3).eval()
    dino = {
        "teacher": {**{"backbone." + k: v for k, v in teacher.state_dict().items() if not k.startswith("head.")},
                    "head.mlp.0.weight": torch.randn(32, 48), "head.last_layer.weight_g": torch.ones(1, 1)},
        "student": {**{"module.backbone." + k: v for k, v in student.state_dict().items() if not k.startswith("head.")},
                    "module.head.mlp.0.weight": torch.randn(32, 48)},
        "epoch": 100, "args": None, "optimizer": {"state": {}},
    }
    torch.save(dino, p("dino.pth"))
    out = convert([p("dino.pth"), p("dino_teacher.h5"), "--num-heads", "3"])
    assert "[teacher]" in out, out
    check_tokens("dino_teacher", teacher, p("dino_teacher.h5"), helper, work, 48)
    convert([p("dino.pth"), p("dino_student.h5"), "--num-heads", "3", "--which", "student"])
    check_tokens("dino_student", student, p("dino_student.h5"), helper, work, 48)

    # DeiT layout: {'model': state dict} with a classifier head; this one without qkv bias.
    deit = ViT(img=32, patch=4, dim=32, depth=2, heads=2, mlp_ratio=2, qkv_bias=False).eval()
    torch.save({"model": deit.state_dict()}, p("deit.pth"))
    convert([p("deit.pth"), p("deit.h5"), "--num-heads", "2"])
    check_tokens("deit", deit, p("deit.h5"), helper, work, 32)

    # A distilled DeiT is refused (kmim has no distillation token) unless asked to drop it.
    distilled = ViT(img=32, patch=8, dim=32, depth=1, heads=2, distilled=True).eval()
    torch.save({"model": distilled.state_dict()}, p("deit_distilled.pth"))
    out = convert([p("deit_distilled.pth"), p("x.h5")], expect=1)
    assert "DISTILLED DeiT" in out and not os.path.exists(p("x.h5")), out
    convert([p("deit_distilled.pth"), p("distilled.h5"), "--drop-dist-token", "--num-heads", "2"])
    with h5py.File(p("distilled.h5"), "r") as f:
        assert f["model/pos_embed"].shape == (1, 17, 32)

    # Not a ViT: one clear line, no output.
    torch.save({"model": {"conv1.weight": torch.zeros(4, 3, 3, 3)}}, p("resnet.pth"))
    out = run([py, converter, p("resnet.pth"), p("y.h5")], expect=1)
    assert "missing 'cls_token'" in out and out.count("\n") == 1 and not os.path.exists(p("y.h5")), out

    # --img-size resamples the learned table (timm's bicubic resample_abs_pos_embed).
    convert([p("timm.pth"), p("timm64.h5"), "--num-heads", "4", "--img-size", "64"])
    with h5py.File(p("timm64.h5"), "r") as f:
        assert f["model"].attrs["img_size"] == 64 and f["model/pos_embed"].shape == (1, 65, 64)
        assert np.array_equal(f["model/pos_embed"][0, 0], timm.pos_embed.detach().numpy()[0, 0])

    # Real size: ViT-S/16 at 224 (heads from the width: 384 / 64 = 6); shapes, and kmim loads it.
    vits = ViT(img=224, patch=16, dim=384, depth=12, heads=6, classes=1000).eval()
    torch.save(vits.state_dict(), p("vit_s16.pth"))
    out = convert([p("vit_s16.pth"), p("vit_s16.h5")])
    assert "img 224 patch 16 D 384 depth 12 heads 6" in out, out
    with h5py.File(p("vit_s16.h5"), "r") as f:
        m = f["model"]
        shapes = {"cls_token": (1, 1, 384), "pos_embed": (1, 197, 384),
                  "patch_embed.proj.weight": (384, 768), "blocks.11.attn.qkv.weight": (1152, 384),
                  "blocks.11.mlp.fc1.weight": (1536, 384), "blocks.11.mlp.fc2.weight": (384, 1536),
                  "norm.weight": (384,)}
        for k, s in shapes.items():
            assert m[k].shape == s, (k, m[k].shape, s)
        assert (m.attrs["embed_dim"], m.attrs["depth"], m.attrs["num_heads"], m.attrs["mlp_ratio"]) == (384, 12, 6, 4)
    check_tokens("vit_s16", vits, p("vit_s16.h5"), helper, work, 224, count=1)

    if manifest:
        # kmim_extract on stored uint8 images: centre crop (here the whole 32x32 image), /255,
        # ImageNet normalisation, the converted timm model's CLS and patch tokens.
        with h5py.File(manifest, "r") as f:
            imgs = f["images"][:]
        x = (imgs.astype(np.float32) / 255.0 - MEAN) / STD
        with torch.no_grad():
            ref = timm.tokens(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
        for pool, want in (("cls", ref[:, 0]), ("patches", ref[:, 1:].reshape(-1, 64))):
            out_file = p(f"extract_{pool}.h5")
            run([os.path.join(bindir, "kmim_extract"), "--manifest", manifest, "--checkpoint",
                 p("timm.h5"), "--pool", pool, "--out", out_file, "--threads", "1"])
            with h5py.File(out_file, "r") as f:
                compare(f"kmim_extract --pool {pool}", f["features"][:], want)
                assert f.attrs["learned_position_embedding"] == 1
    print("PASS: convert_timm_vit.py (DINO, DeiT, timm layouts) matches the PyTorch reference")


if __name__ == "__main__":
    main()
