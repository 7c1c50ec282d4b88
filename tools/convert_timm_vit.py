#!/usr/bin/env python3
"""Converts a public PyTorch ViT checkpoint into a kmim checkpoint (encoder only).

    tools/convert_timm_vit.py dino_deitsmall16_pretrain.pth dino_vits16.h5
    tools/convert_timm_vit.py dino_vitbase16_pretrain_full_checkpoint.pth dino_vitb16.h5 --which teacher
    tools/convert_timm_vit.py deit_small_patch16_224-cd65a155.pth deit_s16.h5
    tools/convert_timm_vit.py vit_small_patch16_224.pth vit_s16.h5 --img-size 64   # resample pos_embed

Input layouts (detected from the keys; docs/eval.md, "Converting public ViT weights"):
  DINO  (facebookresearch/dino): a plain state dict, or a full training checkpoint with
        'teacher'/'student' dicts whose keys carry 'module.' and/or 'backbone.' prefixes and a
        DINO head ('head.mlp.*', 'head.last_layer.*'), which is dropped.
  DeiT  (facebookresearch/deit): {'model': state dict} with a classifier 'head.*' (dropped); the
        distilled variants' 'dist_token' is refused unless --drop-dist-token.
  timm  (ViT-S/16, ViT-B/16, ... from timm; also MAE's encoder): a plain state dict, or
        {'state_dict': ...}/{'model': ...}.
All share timm's VisionTransformer names: cls_token [1,1,D], pos_embed [1,1+L,D],
patch_embed.proj.weight [D,C,P,P] (+ bias), blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
mlp.fc2}.{weight,bias}, norm.{weight,bias}; LayerNorm eps 1e-6 and exact GELU, as kmim's encoder.

Output: kmim's pretraining checkpoint format (src/kmim/train/checkpoint.hpp, docs/pretrain.md)
as train::load_model_parameters reads it: attribute kind = "kmim_pretrain_checkpoint",
format_version 1, parameters_crc32 (zlib CRC-32 over every parameter tensor's float32 bytes in
kmim's layout order), checksum_crc32 (the same continued over zero AdamW moments), the model config as /model attributes, one float32 dataset per tensor
under /model. It is ENCODER-ONLY (attribute encoder_only = 1): the decoder kmim's layout
requires is a minimal zero stub (decoder_embed_dim 4, one block, out_dim 2) and there is no
optimizer state, so it is a frozen model for kmim_extract, kmim_tcas --tokenizer-checkpoint and
kmim_linprobe --checkpoint, never a pretraining run to resume. The LEARNED position embedding is
stored as /model/pos_embed [1, 1+L, D] (attribute crc32); kmim's evaluation stage uses it in
place of the fixed sin-cos table.

Conversions: patch_embed.proj.weight [D, C, P, P] → [D, P*P*C] with columns in (row, col,
channel) order: w.permute(0, 2, 3, 1).reshape(D, -1) (kmim patchifies in that order). A missing
qkv bias (qkv_bias=False models) becomes zeros. Layer scale, fc_norm/global-pool heads,
register tokens and other unknown encoder keys are refused with a message naming them.

Needs torch, numpy and h5py (Debian: python3-torch python3-numpy python3-h5py; run with
/usr/bin/python3). .safetensors inputs also need the safetensors package.
"""

import argparse
import datetime
import math
import os
import re
import sys
import zlib

import h5py
import numpy as np

KIND = "kmim_pretrain_checkpoint"
FORMAT_VERSION = 1
WRAPPERS = ("state_dict", "model", "model_ema", "module")
PREFIXES = ("module.", "backbone.", "encoder.", "model.")
BLOCK_PARTS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
               "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
               "mlp.fc2.weight", "mlp.fc2.bias")
# Keys of classification / projection heads and of MAE's decoder: not part of the encoder.
DROPPED = re.compile(r"^(head\.|head_dist\.|pre_logits\.|decoder_|decoder\.|mask_token$)")


class ConversionError(Exception):
    pass


def load_checkpoint(path):
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ConversionError(f"{path}: reading .safetensors needs the safetensors package") from e
        return load_file(path)
    import torch
    try:
        return torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - report any unpickling problem as one line
        raise ConversionError(f"{path}: cannot be read by torch.load ({e})") from e


def is_tensor_dict(d):
    import torch
    return isinstance(d, dict) and d and all(isinstance(v, torch.Tensor) for v in d.values())


def unwrap(obj, which, path):
    """The encoder's state dict inside a checkpoint and a word on where it came from."""
    where = []
    for _ in range(4):
        if not isinstance(obj, dict):
            raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a state dict")
        if "teacher" in obj or "student" in obj:  # DINO training checkpoint
            if which not in obj:
                raise ConversionError(f"{path}: has no '{which}' entry (keys: {sorted(obj)[:10]})")
            where.append(which)
            obj = obj[which]
            continue
        if is_tensor_dict(obj):
            break
        for w in WRAPPERS:
            if w in obj and isinstance(obj[w], dict):
                where.append(w)
                obj = obj[w]
                break
        else:
            tensors = [k for k, v in obj.items() if hasattr(v, "shape")]
            if tensors:
                obj = {k: obj[k] for k in tensors}
                break
            raise ConversionError(f"{path}: no state dict found (top-level keys: {sorted(obj)[:10]})")
    return obj, "/".join(where)


def strip_prefixes(state):
    out = {}
    for key, value in state.items():
        k = key
        changed = True
        while changed:
            changed = False
            for p in PREFIXES:
                if k.startswith(p):
                    k = k[len(p):]
                    changed = True
        if k in out:
            raise ConversionError(f"two keys map to '{k}' after removing prefixes")
        out[k] = value
    return out


def as_array(t):
    return t.detach().cpu().float().numpy() if hasattr(t, "detach") else np.asarray(t, np.float32)


def resample_pos_embed(table, prefix_tokens, new_grid):
    """timm's resample_abs_pos_embed: bicubic over the patch grid, prefix rows kept."""
    import torch
    import torch.nn.functional as F
    prefix, grid = table[:, :prefix_tokens], table[:, prefix_tokens:]
    old = int(round(math.sqrt(grid.shape[1])))
    d = grid.shape[2]
    g = torch.from_numpy(grid).reshape(1, old, old, d).permute(0, 3, 1, 2)
    g = F.interpolate(g, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    g = g.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, d).numpy()
    return np.concatenate([prefix, g], axis=1)


def convert(state, args, source):
    """kmim model config and tensors {name: array} from a timm-layout state dict."""
    state = {k: v for k, v in strip_prefixes(state).items() if not DROPPED.match(k)}
    if "dist_token" in state and not args.drop_dist_token:
        raise ConversionError(
            "the checkpoint is a DISTILLED DeiT (it has a dist_token); kmim's encoder has only a "
            "CLS token. Pass --drop-dist-token to drop it (the features then differ from the "
            "original model's), or use the non-distilled DeiT weights")
    for bad, what in (("fc_norm.weight", "a global-pool head (fc_norm)"),
                      ("reg_token", "register tokens"), ("norm_pre.weight", "a pre-norm (norm_pre)")):
        if bad in state:
            raise ConversionError(f"the model uses {what}, which kmim's encoder does not have")
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "norm.bias"):
        if key not in state:
            raise ConversionError(f"missing '{key}': not a ViT in the timm/DINO/DeiT layout "
                                  f"(keys: {sorted(state)[:12]})")
    w = as_array(state["patch_embed.proj.weight"])
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ConversionError(f"patch_embed.proj.weight has shape {list(w.shape)}, expected [D, C, P, P]")
    dim, channels, patch = w.shape[0], w.shape[1], w.shape[2]
    depth = 0
    while f"blocks.{depth}.norm1.weight" in state:
        depth += 1
    if depth == 0:
        raise ConversionError("no transformer blocks ('blocks.0.norm1.weight' missing)")
    known = {"cls_token", "pos_embed", "dist_token", "patch_embed.proj.weight",
             "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    known |= {f"blocks.{i}.{p}" for i in range(depth) for p in BLOCK_PARTS}
    unknown = sorted(k for k in state if k not in known)
    if unknown:
        raise ConversionError(f"unsupported keys (layer scale, q/k norms, ...?): {unknown[:8]}")
    hidden = as_array(state["blocks.0.mlp.fc1.weight"]).shape[0]
    if hidden % dim != 0:
        raise ConversionError(f"MLP hidden width {hidden} is not a multiple of the width {dim}")
    heads = args.num_heads or max(1, dim // 64)
    if dim % heads != 0:
        raise ConversionError(f"--num-heads {heads} does not divide the width {dim}")
    prefix_tokens = 2 if "dist_token" in state else 1
    pos = as_array(state["pos_embed"])
    grid = int(round(math.sqrt(pos.shape[1] - prefix_tokens)))
    if pos.ndim != 3 or pos.shape[2] != dim or grid * grid != pos.shape[1] - prefix_tokens:
        raise ConversionError(f"pos_embed has shape {list(pos.shape)}: expected [1, {prefix_tokens} + G*G, {dim}]")
    img_size = grid * patch
    if args.img_size and args.img_size != img_size:
        if args.img_size % patch != 0:
            raise ConversionError(f"--img-size {args.img_size} is not a multiple of the patch size {patch}")
        pos = resample_pos_embed(pos, prefix_tokens, args.img_size // patch)
        img_size = args.img_size
    if prefix_tokens == 2:  # drop the distillation token's row (CLS stays row 0)
        pos = np.concatenate([pos[:, :1], pos[:, 2:]], axis=1)
    if dim % 4 != 0:
        raise ConversionError(f"width {dim} is not a multiple of 4 (kmim's model config needs it)")

    config = dict(name=args.name or os.path.splitext(os.path.basename(args.input))[0],
                  img_size=img_size, patch_size=patch, channels=channels, embed_dim=dim,
                  depth=depth, num_heads=heads, decoder_embed_dim=4, decoder_depth=1,
                  decoder_num_heads=1, mlp_ratio=hidden // dim, out_dim=2,
                  loss="token_cross_entropy", norm_pix_loss=1,
                  mask_ratio=0.75 if (img_size // patch) ** 2 >= 4 else 0.0)

    def get(key, shape, default_zero=False):
        if key not in state:
            if default_zero:
                return np.zeros(shape, np.float32)
            raise ConversionError(f"missing '{key}'")
        a = as_array(state[key]).astype(np.float32)
        if tuple(a.shape) != tuple(shape):
            raise ConversionError(f"'{key}' has shape {list(a.shape)}, expected {list(shape)}")
        return a

    tensors = {}
    tensors["cls_token"] = get("cls_token", (1, 1, dim))
    tensors["mask_token"] = np.zeros((1, 1, 4), np.float32)
    # Conv weight [D, C, P, P] → kmim's linear [D, P*P*C], columns in (row, col, channel) order.
    tensors["patch_embed.proj.weight"] = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(dim, -1))
    tensors["patch_embed.proj.bias"] = get("patch_embed.proj.bias", (dim,), default_zero=True)
    for i in range(depth):
        b = f"blocks.{i}."
        for name, shape in (("norm1.weight", (dim,)), ("norm1.bias", (dim,)),
                            ("attn.qkv.weight", (3 * dim, dim)), ("attn.qkv.bias", (3 * dim,)),
                            ("attn.proj.weight", (dim, dim)), ("attn.proj.bias", (dim,)),
                            ("norm2.weight", (dim,)), ("norm2.bias", (dim,)),
                            ("mlp.fc1.weight", (hidden, dim)), ("mlp.fc1.bias", (hidden,)),
                            ("mlp.fc2.weight", (dim, hidden)), ("mlp.fc2.bias", (dim,))):
            tensors[b + name] = get(b + name, shape, default_zero=name.endswith(".bias"))
    tensors["norm.weight"] = get("norm.weight", (dim,))
    tensors["norm.bias"] = get("norm.bias", (dim,))
    return config, tensors, np.ascontiguousarray(pos, np.float32)


def kmim_layout(config):
    """(name, shape) of every tensor in kmim's parameter_layout order (src/kmim/model/vit_mae.cpp)."""
    d, dd, k = config["embed_dim"], config["decoder_embed_dim"], config["out_dim"]
    pd = config["patch_size"] ** 2 * config["channels"]

    def block(prefix, dim):
        h = dim * config["mlp_ratio"]
        return [(prefix + ".norm1.weight", (dim,)), (prefix + ".norm1.bias", (dim,)),
                (prefix + ".attn.qkv.weight", (3 * dim, dim)), (prefix + ".attn.qkv.bias", (3 * dim,)),
                (prefix + ".attn.proj.weight", (dim, dim)), (prefix + ".attn.proj.bias", (dim,)),
                (prefix + ".norm2.weight", (dim,)), (prefix + ".norm2.bias", (dim,)),
                (prefix + ".mlp.fc1.weight", (h, dim)), (prefix + ".mlp.fc1.bias", (h,)),
                (prefix + ".mlp.fc2.weight", (dim, h)), (prefix + ".mlp.fc2.bias", (dim,))]

    out = [("cls_token", (1, 1, d)), ("mask_token", (1, 1, dd)),
           ("patch_embed.proj.weight", (d, pd)), ("patch_embed.proj.bias", (d,))]
    for i in range(config["depth"]):
        out += block(f"blocks.{i}", d)
    out += [("norm.weight", (d,)), ("norm.bias", (d,)), ("decoder_embed.weight", (dd, d)),
            ("decoder_embed.bias", (dd,))]
    for i in range(config["decoder_depth"]):
        out += block(f"decoder_blocks.{i}", dd)
    out += [("decoder_norm.weight", (dd,)), ("decoder_norm.bias", (dd,)),
            ("decoder_pred.weight", (k, dd)), ("decoder_pred.bias", (k,))]
    return out


def write_checkpoint(path, config, tensors, pos_embed, source, argv):
    layout = kmim_layout(config)
    crc = 0
    values = {}
    for name, shape in layout:
        a = tensors.get(name)
        if a is None:  # the decoder stub
            a = np.zeros(shape, np.float32)
            if name.endswith("norm.weight"):
                a = np.ones(shape, np.float32)
        a = np.ascontiguousarray(a, dtype="<f4")
        if tuple(a.shape) != tuple(shape):
            raise ConversionError(f"internal: {name} has shape {a.shape}, layout says {shape}")
        if not np.isfinite(a).all():
            raise ConversionError(f"{name} holds a non-finite value")
        values[name] = a
        crc = zlib.crc32(a.tobytes(), crc)
    # The full-state checksum covers the parameters then the two AdamW moments; an encoder-only
    # checkpoint has none, so it is the checksum of zero moments (never checked by the readers of
    # a frozen model, which use parameters_crc32; read_checkpoint refuses the file for lack of an
    # optimizer group anyway).
    state_crc = crc
    zeros = bytes(1 << 22)
    left = 2 * 4 * sum(int(np.prod(s)) for _, s in layout)
    while left > 0:
        n = min(left, len(zeros))
        state_crc = zlib.crc32(zeros[:n], state_crc)
        left -= n
    pos = np.ascontiguousarray(pos_embed, dtype="<f4")
    if not np.isfinite(pos).all():
        raise ConversionError("pos_embed holds a non-finite value")
    partial = path + ".partial"
    with h5py.File(partial, "w") as f:
        f.attrs["kind"] = KIND
        f.attrs.create("format_version", FORMAT_VERSION, dtype=np.int32)
        f.attrs.create("parameters_crc32", crc, dtype=np.uint32)
        f.attrs.create("checksum_crc32", state_crc, dtype=np.uint32)
        f.attrs.create("encoder_only", 1, dtype=np.int32)
        f.attrs["converted_from"] = source
        f.attrs["program"] = "tools/convert_timm_vit.py"
        f.attrs["kmim_version"] = "0.1.0"
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        f.attrs["config"] = " ".join(argv)
        m = f.create_group("model")
        for key in ("name", "loss"):
            m.attrs[key] = config[key]
        for key in ("img_size", "patch_size", "channels", "embed_dim", "depth", "num_heads",
                    "decoder_embed_dim", "decoder_depth", "decoder_num_heads", "mlp_ratio",
                    "out_dim", "norm_pix_loss"):
            m.attrs.create(key, config[key], dtype=np.int32)
        m.attrs.create("mask_ratio", config["mask_ratio"], dtype=np.float64)
        for name, _ in layout:
            m.create_dataset(name, data=values[name])
        d = m.create_dataset("pos_embed", data=pos)
        d.attrs.create("crc32", zlib.crc32(pos.tobytes()), dtype=np.uint32)
        d.attrs["note"] = "learned position embedding [1, 1 + L, D], row 0 = CLS (used instead of sin-cos)"
        f.create_dataset("parameter_names", data=[n for n, _ in layout], dtype=h5py.string_dtype())
    os.replace(partial, path)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="PyTorch checkpoint (.pth/.pt, or .safetensors)")
    ap.add_argument("output", help="kmim checkpoint to write (.h5)")
    ap.add_argument("--which", choices=("teacher", "student"), default="teacher",
                    help="DINO training checkpoints: which network (default teacher, as DINO evaluates)")
    ap.add_argument("--num-heads", type=int, default=0,
                    help="attention heads (not stored in state dicts; default width/64: ViT-S 6, ViT-B 12)")
    ap.add_argument("--img-size", type=int, default=0,
                    help="input size; a size other than the checkpoint's resamples pos_embed bicubically (timm)")
    ap.add_argument("--name", default="", help="model name stored in the checkpoint (default: input file stem)")
    ap.add_argument("--drop-dist-token", action="store_true",
                    help="distilled DeiT: drop the distillation token (changes the features)")
    args = ap.parse_args(argv[1:])
    try:
        raw = load_checkpoint(args.input)
        state, where = unwrap(raw, args.which, args.input)
        config, tensors, pos = convert(state, args, args.input)
        source = f"{args.input}" + (f" [{where}]" if where else "")
        write_checkpoint(args.output, config, tensors, pos, source, argv)
    except ConversionError as e:
        print(f"convert_timm_vit.py: error: {e}", file=sys.stderr)
        return 1
    print(f"convert_timm_vit.py: wrote '{args.output}': {config['name']} img {config['img_size']} "
          f"patch {config['patch_size']} D {config['embed_dim']} depth {config['depth']} heads "
          f"{config['num_heads']} (from {source})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
