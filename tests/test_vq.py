"""LlamaGen's VQ tokenizer: parity with the official code, lookup, shapes, errors, round trips."""

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import FIXTURES
from tokenizers_visual import VQModel
from weights_registry.converters import convert_llamagen_vq


@pytest.fixture(scope="module")
def official():
    return convert_llamagen_vq(FIXTURES / "vq_tiny.pt"), load_file(FIXTURES / "vq_tiny_io.safetensors")


def test_matches_the_official_tokenizer(official):
    vq, io = official
    with torch.no_grad():
        codes, ids, _ = vq.quantize(io["images"])
        assert torch.equal(ids, io["ids"]) and torch.equal(vq.encode(io["images"]), io["ids"])
        assert torch.allclose(codes, io["quant"], atol=1e-5)
        assert torch.allclose(vq.decode_codes(io["quant"]), io["reconstruction"], atol=1e-4)
        assert torch.allclose(vq.decode(io["ids"]), io["reconstruction_from_ids"], atol=1e-4)


def test_lookup_is_the_brute_force_nearest_codeword(official):
    vq, _ = official
    z = torch.randn(500, 8)
    unit = torch.nn.functional.normalize(z, dim=-1)
    brute = torch.stack([((u - vq.codebook) ** 2).sum(-1).argmin() for u in unit])
    assert torch.equal(vq.quantizer.nearest(z, chunk=37), brute)
    assert torch.allclose(vq.codebook.norm(dim=-1), torch.ones(64))


def _llamagen_vq_shapes(ch, ch_mult, z, res_blocks, codes, dim):
    """Key names and shapes of LlamaGen's VQModel, enumerated from its architecture."""
    shapes = {"encoder.conv_in.weight": (ch, 3, 3, 3), "encoder.conv_in.bias": (ch,),
              "quant_conv.weight": (dim, z, 1, 1), "quant_conv.bias": (dim,),
              "post_quant_conv.weight": (z, dim, 1, 1), "post_quant_conv.bias": (z,),
              "quantize.embedding.weight": (codes, dim), "quantize.codebook_used": (65536,)}

    def res(prefix, cin, cout):
        shapes.update({f"{prefix}.norm1.weight": (cin,), f"{prefix}.norm1.bias": (cin,),
                       f"{prefix}.conv1.weight": (cout, cin, 3, 3), f"{prefix}.conv1.bias": (cout,),
                       f"{prefix}.norm2.weight": (cout,), f"{prefix}.norm2.bias": (cout,),
                       f"{prefix}.conv2.weight": (cout, cout, 3, 3), f"{prefix}.conv2.bias": (cout,)})
        if cin != cout:
            shapes.update({f"{prefix}.nin_shortcut.weight": (cout, cin, 1, 1), f"{prefix}.nin_shortcut.bias": (cout,)})

    def attn(prefix, c):
        for name in ("norm", "q", "k", "v", "proj_out"):
            shapes[f"{prefix}.{name}.weight"] = (c,) if name == "norm" else (c, c, 1, 1)
            shapes[f"{prefix}.{name}.bias"] = (c,)

    n, cin = len(ch_mult), ch
    for i, m in enumerate(ch_mult):
        for j in range(res_blocks):
            res(f"encoder.conv_blocks.{i}.res.{j}", cin, ch * m)
            cin = ch * m
            if i == n - 1:
                attn(f"encoder.conv_blocks.{i}.attn.{j}", cin)
        if i != n - 1:
            shapes[f"encoder.conv_blocks.{i}.downsample.conv.weight"] = (cin, cin, 3, 3)
            shapes[f"encoder.conv_blocks.{i}.downsample.conv.bias"] = (cin,)
    for side in ("encoder", "decoder"):
        top = ch * ch_mult[-1]
        res(f"{side}.mid.0", top, top), attn(f"{side}.mid.1", top), res(f"{side}.mid.2", top, top)
    shapes.update({"encoder.norm_out.weight": (cin,), "encoder.norm_out.bias": (cin,),
                   "encoder.conv_out.weight": (z, cin, 3, 3), "encoder.conv_out.bias": (z,),
                   "decoder.conv_in.weight": (cin, z, 3, 3), "decoder.conv_in.bias": (cin,)})
    for k, i in enumerate(reversed(range(n))):
        for j in range(res_blocks + 1):
            res(f"decoder.conv_blocks.{k}.res.{j}", cin, ch * ch_mult[i])
            cin = ch * ch_mult[i]
            if i == n - 1:
                attn(f"decoder.conv_blocks.{k}.attn.{j}", cin)
        if i != 0:
            shapes[f"decoder.conv_blocks.{k}.upsample.conv.weight"] = (cin, cin, 3, 3)
            shapes[f"decoder.conv_blocks.{k}.upsample.conv.bias"] = (cin,)
    shapes.update({"decoder.norm_out.weight": (cin,), "decoder.norm_out.bias": (cin,),
                   "decoder.conv_out.weight": (3, cin, 3, 3), "decoder.conv_out.bias": (3,)})
    return shapes


def test_key_enumeration_matches_the_official_file():
    official = torch.load(FIXTURES / "vq_tiny.pt", weights_only=True)["model"]
    expected = {k: tuple(v.shape) for k, v in official.items()}
    assert _llamagen_vq_shapes(32, [1, 2], 64, 2, 64, 8) == expected


def test_vq16_checkpoint_layout_converts():
    """vq_ds16_c2i.pt: ch 128, ch_mult (1, 1, 2, 2, 4), z 256, 2 res blocks, 16384 x 8 codes (72M)."""
    shapes = _llamagen_vq_shapes(128, [1, 1, 2, 2, 4], 256, 2, 16384, 8)
    sd = {k: torch.randn(s) * 0.02 for k, s in shapes.items()}
    vq = convert_llamagen_vq({"model": sd, "discriminator": {}, "optimizer": {}})
    assert sum(p.numel() for p in vq.parameters()) == pytest.approx(72e6, rel=0.03)
    assert vq.downsample_factor == 16 and vq.config.codebook_size == 16384
    assert torch.equal(vq.state_dict()["decoder.mid.attn.proj.weight"], sd["decoder.mid.1.proj_out.weight"])
    broken = dict(sd)
    broken.pop("decoder.conv_out.bias")
    with pytest.raises(ValueError, match="decoder.conv_out.bias"):
        convert_llamagen_vq({"model": broken})


def test_shapes_errors_and_round_trip(tmp_path):
    torch.manual_seed(0)
    vq = VQModel(codebook_size=32, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1],
                 decoder_ch_mult=[1, 1], num_res_blocks=1, z_channels=32).eval()
    images = torch.rand(2, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        ids = vq.encode(images)
        assert ids.shape == (2, 8, 12) and vq.decode(ids).shape == (2, 3, 16, 24)
    for bad, message in [(torch.rand(2, 1, 16, 16), "1 channels"), (torch.rand(2, 3, 15, 16), "multiple of"),
                         (torch.full((1, 3, 16, 16), float("nan")), "NaN"), (torch.rand(3, 16, 16), r"\[B, 3, H, W\]")]:
        with pytest.raises(ValueError, match=message):
            vq.encode(bad)
    with pytest.raises(ValueError, match=r"lie in \[0, 32\)"):
        vq.decode(torch.full((1, 2, 2), 32))
    with pytest.raises(ValueError, match="must divide"):
        VQModel(encoder_ch=48)
    vq.save_pretrained(tmp_path / "vq")
    again = VQModel.from_pretrained(tmp_path / "vq").eval()
    with torch.no_grad():
        assert torch.equal(again.encode(images), ids)


def test_builtin_vq_shapes_reconstructs_shapes():
    import zoo
    from zoo.data.shapes import ShapesDataset
    from zoo.metrics.image import psnr

    vq = zoo.load("vq-shapes")
    data = ShapesDataset("test", size=64, length=8)
    images = torch.stack([data[i]["image"] for i in range(8)])
    with torch.no_grad():
        ids = vq.encode(images)
        assert ids.shape == (8, 16, 16) and vq.config.codebook_size == 4096
        assert psnr(vq.decode(ids), images) > 20


def test_attention_registers_start_as_attend_to_nothing():
    """Registers (zero keys and values) add a "nowhere" option to every attention block; LlamaGen has none."""
    from tokenizers_visual.vq import AttnBlock

    torch.manual_seed(0)
    plain, with_registers = AttnBlock(32, 8), AttnBlock(32, 8, registers=2)
    with_registers.load_state_dict({**plain.state_dict(), "registers": torch.zeros(2, 2, 32)})
    x = torch.randn(1, 32, 4, 4)
    assert not torch.allclose(plain(x), with_registers(x))  # some attention now goes to the registers
    vq = VQModel(codebook_size=64, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1],
                 decoder_ch_mult=[1, 1], num_res_blocks=1, z_channels=32, attention_registers=3)
    assert vq.decode(vq.encode(torch.rand(1, 3, 16, 16) * 2 - 1)).shape == (1, 3, 16, 16)
    assert sum("registers" in k for k in vq.state_dict()) == 5  # encoder 1 + middle, decoder 2 + middle
