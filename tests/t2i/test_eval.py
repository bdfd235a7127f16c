"""``priorswap eval t2i`` on tiny random SDXL and SD3 pipelines with tiny metric networks, offline on the CPU.

Its samples are ``sample t2i``'s for the same seeds (vanilla and swapped), a killed run resumes to the same table,
two shards and an unsharded scoring run equal one process, the metrics equal a hand computation with the same
tiny networks called directly, and every bad input is one line before any sample is written.
"""

from __future__ import annotations

import csv
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from priorswap.toolkit.cli import main  # noqa: E402
from priorswap.toolkit.t2i import tiny  # noqa: E402
from priorswap.toolkit.unet import tiny as uf  # noqa: E402

import metric_factories as mf  # noqa: E402
from t2i_factories import randomize_lora  # noqa: E402

PROMPTS, SEED, STEPS, SCALE = ["a cat", "a red dog", "a blue house"], 3, "2", "6"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    root = tmp_path_factory.mktemp("t2ieval")
    sdxl = tiny.save_sdxl(str(root / "sdxl"))
    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    randomize_lora(pipe.unet)
    StableDiffusionXLPipeline.save_lora_weights(
        str(root / "lora"), unet_lora_layers=get_peft_model_state_dict(pipe.unet)
    )
    for name, count in (("reference", 4), ("subject", 2)):
        (root / name).mkdir()
        for i in range(count):
            uf.save_image(str(root / name / f"img{i}.png"), size=(40 + 8 * i, 32), seed=10 * len(name) + i)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n\n")
    clip = str(root / "clip")
    mf.write_tiny_clip(clip)
    return {
        "root": root,
        "sdxl": sdxl,
        "lora": str(root / "lora"),
        "sd3": tiny.save_sd3(str(root / "sd3")),
        "sd35": tiny.save_sd3(str(root / "sd35"), seed=1),
        "prompts": str(root / "prompts.txt"),
        "reference": str(root / "reference"),
        "subject": str(root / "subject"),
        "clip": clip,
        "inception": mf.inception_weights(str(root / "inception.pth")),
        "vit": mf.tiny_vit_weights(str(root / "vit.safetensors")),
    }


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([*argv, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("priorswap: error")]
    assert code == 2 and len(lines) == 1, err
    return lines[0]


def sdxl_args(env, out, *extra):
    return ["eval", "t2i", "--model", env["sdxl"], "--lora", env["lora"], "--priors", "base", "--prompts",
            env["prompts"], "--output-dir", str(out), "--steps", STEPS, "--seed", str(SEED), "--guidance-scale",
            SCALE, "--clip", env["clip"], "--device", "cpu", *extra]  # fmt: skip


def dino_args(env):
    return ["--dinov2-weights", env["vit"], "--dinov2-model", mf.TINY_VIT, "--dinov2-size", "32"]


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def values(out) -> dict:
    return {(r["method"], r["setting"], r["metric"]): float(r["value"]) for r in read_csv(out / "eval.csv")}


def samples(out, method: str, scale: str = SCALE) -> np.ndarray:
    return np.stack([np.asarray(Image.open(out / "samples" / method / f"g{scale}" / f"p{i}_0.png")) for i in range(3)])


def sample_t2i(tmp_path, capsys, *args) -> dict:
    npz = tmp_path / "s.npz"
    code = main(["sample", "t2i", *args, "--prompts", *PROMPTS, "--steps", STEPS, "--seed", str(SEED), "--guidance-scale", SCALE, "--output", str(npz),
                 "--compare", "--no-progress", "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = np.load(npz)
    return {k: data[k] for k in data.files}


# -- the samples are sample t2i's ----------------------------------------------------------------------
def test_sdxl_lora_free_prior_samples_equal_sample_t2i_and_metrics_equal_a_hand_computation(env, capsys, tmp_path):
    from transformers import CLIPModel, CLIPTokenizer

    from priorswap.toolkit.metrics import build_extractor

    out = tmp_path / "sdxl"
    code, text, err = run_cli(capsys, *sdxl_args(env, out, "--subject-images", env["subject"], *dino_args(env)))
    assert code == 0, err
    assert "| vanilla CFG | g=6 | 3 |" in text and "| ours w/ base | g=6 | 3 |" in text
    assert "CLIP score ↑" in text and "CLIP-I ↑" in text and "DINOv2 ↑" in text
    ref = sample_t2i(tmp_path, capsys, "--model", env["sdxl"], "--lora", env["lora"], "--prior", "base")
    assert np.array_equal(samples(out, "vanilla"), ref["vanilla"])  # exact: same seeds, same batches
    assert np.array_equal(samples(out, "base"), ref["arr_0"])
    assert not np.array_equal(ref["vanilla"], ref["arr_0"])  # the rows differ: the comparison is not vacuous
    # the metrics by hand: transformers' CLIPModel called directly, the same tiny DINO network, plain means
    clip, tok = CLIPModel.from_pretrained(env["clip"]).eval(), CLIPTokenizer.from_pretrained(env["clip"])
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

    def unit(img):
        return torch.from_numpy(np.asarray(img.convert("RGB"), np.float32) / 255).permute(2, 0, 1)[None]

    def image_embed(x):  # shortest side to 32 (bicubic, antialiased), centre crop, CLIP normalisation
        h, w = x.shape[-2:]
        size = (32, max(32, round(w * 32 / h))) if h <= w else (max(32, round(h * 32 / w)), 32)
        x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True).clamp(0, 1)
        top, left = (x.shape[-2] - 32) // 2, (x.shape[-1] - 32) // 2
        with torch.no_grad():
            e = clip.get_image_features(pixel_values=(x[..., top : top + 32, left : left + 32] - mean) / std)
        return torch.nn.functional.normalize(e if torch.is_tensor(e) else e.pooler_output, dim=-1)[0]

    def text_embed(t):
        with torch.no_grad():
            e = clip.get_text_features(**tok([t], return_tensors="pt"))
        return torch.nn.functional.normalize(e if torch.is_tensor(e) else e.pooler_output, dim=-1)[0]

    dino = build_extractor("dinov2", env["vit"], model_name=mf.TINY_VIT, image_size=32)
    subjects = [unit(Image.open(os.path.join(env["subject"], f"img{i}.png"))) for i in range(2)]
    sub_clip = [image_embed(s) for s in subjects]
    sub_dino = [dino(s[..., :, (s.shape[-1] - 32) // 2 : (s.shape[-1] - 32) // 2 + 32])[0] for s in subjects]
    rows = {(r["method"], r["item"]): r for r in read_csv(out / "items.csv")}
    table = values(out)
    for method in ("vanilla", "base"):
        per = []
        for i, prompt in enumerate(PROMPTS):
            x = unit(Image.open(out / "samples" / method / "g6" / f"p{i}_0.png"))
            g, d = image_embed(x), dino(x)[0]
            expected = {
                "clip_score": 100 * max(float(g @ text_embed(prompt)), 0.0),
                "clip_i": sum(float(g @ s) for s in sub_clip) / 2,
                "dino_sim": sum(float(torch.cosine_similarity(d, s, dim=0)) for s in sub_dino) / 2,
            }
            for metric, value in expected.items():
                assert float(rows[(method, f"p{i}")][metric]) == pytest.approx(value, abs=1e-4), (method, metric)
            per.append(expected)
        for metric in ("clip_score", "clip_i", "dino_sim"):
            mean_value = sum(e[metric] for e in per) / 3
            assert table[(method, "g=6", metric)] == pytest.approx(mean_value, abs=1e-4)
    assert (out / "grid.png").exists() and not list(out.rglob(".*.tmp"))


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 3 samples in 2048 dims
def test_sd3_with_another_sd3_as_prior_equals_sample_t2i_and_warns_about_a_small_reference(env, capsys, tmp_path):
    out = tmp_path / "sd3"
    args = ["eval", "t2i", "--model", env["sd3"], "--priors", f"sd35={env['sd35']}", "--prompts", env["prompts"],
            "--output-dir", str(out), "--steps", STEPS, "--seed", str(SEED), "--guidance-scale", SCALE, "--clip",
            env["clip"], "--device", "cpu", "--reference", env["reference"], "--inception-weights", env["inception"],
            "--stats-cache", str(tmp_path / "stats"), *dino_args(env)]  # fmt: skip
    code, text, err = run_cli(capsys, *args)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("priorswap: warning")]
    assert len(warnings) == 2 and "FID reference holds 4 images, fewer than its 2048" in warnings[0]
    assert "FD-DINOv2 reference holds 4 images, fewer than its 192" in warnings[1]
    assert "FID ↓" in text and "FD_DINOv2 ↓" in text and "| ours w/ sd35 | g=6 | 3 |" in text
    ref = sample_t2i(tmp_path, capsys, "--model", env["sd3"], "--prior", env["sd35"])
    assert np.array_equal(samples(out, "vanilla"), ref["vanilla"])
    assert np.array_equal(samples(out, "sd35"), ref["arr_0"])
    v = values(out)
    assert v[("vanilla", "g=6", "fid")] > 0 and v[("sd35", "g=6", "fd_dinov2")] > 0
    assert len(list((tmp_path / "stats").glob("refstats-*.safetensors"))) == 2


# -- resumable and shardable ---------------------------------------------------------------------------
def test_killed_run_resumes_to_one_runs_samples_and_table(env, capsys, tmp_path, monkeypatch):
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    extra = ("--guidance-scale", "2", "6", "--batch-size", "2")
    assert run_cli(capsys, *sdxl_args(env, fresh, *extra))[0] == 0
    real_save, saved = Image.Image.save, []

    def dying_save(self, fp, *a, **k):  # the 4th PNG dies half-written, inside the atomic write
        if len(saved) == 3:
            fp.write(b"\x89PNG half")
            raise KeyboardInterrupt
        saved.append(fp)
        real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", dying_save)
    code, _, _ = run_cli(capsys, *sdxl_args(env, resumed, *extra))
    assert code == 130 and not (resumed / "eval.md").exists()
    assert len(list((resumed / "samples").rglob("*.png"))) == 3 and not list(resumed.rglob(".*.tmp"))
    monkeypatch.setattr(Image.Image, "save", real_save)
    code, _, err = run_cli(capsys, *sdxl_args(env, resumed, *extra))
    assert code == 0, err
    assert json.loads((resumed / "settings.json").read_text())["made_this_run"] == 2 * 2 * 3 - 3
    for method in ("vanilla", "base"):
        for scale in ("2", "6"):
            assert np.array_equal(samples(resumed, method, scale), samples(fresh, method, scale)), (method, scale)
    assert values(resumed) == values(fresh)
    code, _, err = run_cli(capsys, *sdxl_args(env, resumed, *extra, "--steps", "3"))
    # a changed setting is refused, not mixed with the samples on disk
    assert "holds a run with steps=2, this one has steps=3" in one_line_error(code, err)


def test_two_shards_then_scoring_equal_one_process(env, capsys, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    extra = ("--batch-size", "1")
    assert run_cli(capsys, *sdxl_args(env, single, *extra))[0] == 0
    for k in range(2):
        code, text, err = run_cli(capsys, *sdxl_args(env, sharded, *extra, "--shard", f"{k}/2"))
        assert code == 0 and "run again without --shard" in text, err
        assert not (sharded / "eval.md").exists()
    assert len(list((sharded / "samples" / "vanilla").rglob("*.png"))) == 3
    code, _, err = run_cli(capsys, *sdxl_args(env, sharded, *extra))
    assert code == 0, err
    assert json.loads((sharded / "settings.json").read_text())["made_this_run"] == 0
    for method in ("vanilla", "base"):
        assert np.array_equal(samples(sharded, method), samples(single, method))
    assert values(sharded) == values(single)


# -- bad input: one line, before any sample --------------------------------------------------------------
def test_bad_inputs_are_one_line_before_any_sample(env, capsys, tmp_path):
    def refused(*extra, out=None, base=None) -> str:
        out = out or tmp_path / "o"
        argv = base or sdxl_args(env, out)
        code, _, err = run_cli(capsys, *argv, *extra)
        line = one_line_error(code, err)
        assert not (out / "samples").exists()
        return line

    assert "cannot be read" in refused("--prompts", str(tmp_path / "missing.txt"))
    (tmp_path / "empty.jsonl").write_text("\n")
    assert "holds no prompt" in refused("--prompts", str(tmp_path / "empty.jsonl"))
    (tmp_path / "bad.csv").write_text("image,label\na.png,1\n")
    assert "has no prompt/caption/text column" in refused("--prompts", str(tmp_path / "bad.csv"))
    (tmp_path / "bad.json").write_text('{"images": []}')
    assert "without an 'annotations' list" in refused("--prompts", str(tmp_path / "bad.json"))
    assert "--reference" in refused("--reference", str(tmp_path / "nowhere"), "--inception-weights", env["inception"])
    (tmp_path / "noimages").mkdir()
    line = refused(
        "--reference", str(tmp_path / "noimages"), "--metrics", "fid", "--inception-weights", env["inception"]
    )
    assert "--reference" in line and "holds no images" in line
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(b"\x89PNG not really")
    assert "corrupt" in refused("--subject-images", str(corrupt), *dino_args(env))
    assert "need --reference" in refused("--metrics", "fid")
    assert "need --subject-images" in refused("--metrics", "clip_i")
    (tmp_path / "afile").write_text("x")
    line = refused(out=tmp_path / "afile" / "out")
    assert "--output-dir" in line
    no_lora = [a for a in sdxl_args(env, tmp_path / "o") if a not in ("--lora", env["lora"])]
    assert "needs --lora" in refused(base=no_lora)
    assert "cannot stand in" in refused("--priors", env["sd3"])  # a flow-matching prior for a DDPM model
    assert "--shard 2/2 is invalid" in refused("--shard", "2/2")


def test_prompt_files_in_every_format_give_the_same_prompts(tmp_path):
    from priorswap.toolkit.t2i.prompts import read_prompts

    coco = {
        "images": [],
        "annotations": [{"image_id": i, "id": 9 - i, "caption": f" {p} "} for i, p in enumerate(PROMPTS)],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    (tmp_path / "p.jsonl").write_text(
        "\n".join(json.dumps({"text" if i else "prompt": p}) for i, p in enumerate(PROMPTS))
    )
    (tmp_path / "p.csv").write_text("id,caption\n" + "\n".join(f'{i},"{p}"' for i, p in enumerate(PROMPTS)))
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS))
    for name in ("c.json", "p.jsonl", "p.csv", "p.txt"):
        got = read_prompts(str(tmp_path / name))
        assert [p.text for p in got] == PROMPTS and [p.id for p in got] == ["p0", "p1", "p2"], name


# -- bench sample --t2i ----------------------------------------------------------------------------------------
def test_bench_sample_t2i_prints_a_row_per_mode_with_sane_fields(capsys):
    """The SD3-architecture rows at a tiny latent (the SDXL rows build a 3.5 GB UNet: left to the README run)."""
    code = main(["bench", "sample", "--t2i", "--t2i-archs", "sd3", "--t2i-latent", "8", "--batch-sizes", "1",
                 "--repeats", "1", "--device", "cpu", "--json"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out.strip().splitlines()[-1])["rows"]
    assert [(r["arch"], r["batch"], r["mode"]) for r in rows] == [("sd3", 1, "lora-vanilla"), ("sd3", 1, "lora-free")]
    for r in rows:
        assert r["s"] > 0 and r["peak_mb"] > 100 and r["time_ratio"] > 0 and r["memory_ratio"] > 0
    assert rows[0]["time_ratio"] == 1.0 and rows[0]["memory_ratio"] == 1.0  # lora-vanilla is the reference
    assert "| sd3 | 1 | lora-free |" in out and "peak RSS MiB" in out
    code = main(["bench", "sample", "--t2i", "--modes", "swapped"])
    assert code == 2 and "--t2i always runs" in capsys.readouterr().err


def test_clip_score_is_100_times_the_cosine_clamped_at_zero():
    """The formula itself (the tiny CLIP's cosines may all be negative, which the end-to-end test cannot tell)."""
    from priorswap.toolkit.protocols.t2i_score import clip_score

    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [0.0, -1.0]])
    assert clip_score(image, text).tolist() == pytest.approx([60.0, 0.0])
