"""`priorswap sample t2i` refuses what cannot work in one line, from config files alone: no weights are loaded and
no file is written."""

import pytest

from priorswap.toolkit.cli import main
from priorswap.toolkit.t2i import tiny


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i_refusals")
    return {
        "sdxl": tiny.save_sdxl(str(root / "sdxl")),
        "sd3": tiny.save_sd3(str(root / "sd3")),
        "alpha": tiny.save_pixart(str(root / "alpha"), sigma=False),
        "flux": tiny.save_flux_index(str(root / "flux")),
    }


@pytest.fixture
def no_loading(monkeypatch):
    """Any pipeline weights loaded would fail the test: the refusal must come first."""
    from diffusers import DiffusionPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", classmethod(refuse))


CASES = {
    "flux model": (["--model", "{flux}"], "guidance-distilled"),
    "flux prior": (["--model", "{sdxl}", "--prior", "{flux}"], "guidance-distilled"),
    "base without lora": (["--model", "{sdxl}", "--prior", "base"], "needs --lora"),
    "ddpm prior for flow": (["--model", "{sd3}", "--prior", "{sdxl}"], "DDPM schedule and the model is flow"),
    "flow prior for ddpm": (["--model", "{sdxl}", "--prior", "{sd3}"], "flow matching and the model is a DDPM"),
    "other vae": (["--model", "{sdxl}", "--prior", "{alpha}"], "VAE scaling factor is 0.18215"),
    "rescale without": (["--model", "{sd3}", "--rescale", "0.5"], "has no guidance rescale"),
    "pixart lora": (["--model", "{alpha}", "--lora", "{sdxl}"], "no LoRA loader for PixArtAlphaPipeline"),
    "flow scheduler": (["--model", "{sd3}", "--scheduler", "ddim"], "flow matching"),
    "lora missing": (["--model", "{sdxl}", "--lora", "{sdxl}/nope.safetensors"], "does not exist"),
    "prior dtype for base": (
        ["--model", "{sdxl}", "--lora", "{sdxl}", "--prior", "base", "--prior-dtype", "bf16"],
        "--prior MODEL",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_in_one_line_before_loading(case, folders, no_loading, tmp_path, capsys):
    args, expected = CASES[case]
    out = tmp_path / "o.npz"
    argv = ["sample", "t2i", *[a.format(**folders) for a in args], "--prompts", "a cat", "--output", str(out)]
    code = main([*argv, "--device", "cpu"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("priorswap") and expected in lines[0], err
    assert not out.exists()


def test_prompts_from_a_file_or_the_command_line_not_both(folders, no_loading, tmp_path, capsys):
    file = tmp_path / "p.txt"
    file.write_text("a cat\n\n")
    base = ["sample", "t2i", "--model", folders["sdxl"], "--output", str(tmp_path / "o.npz"), "--device", "cpu"]
    assert main([*base, "--prompts", "a", "--prompt-file", str(file)]) == 2
    assert "exactly one of --prompts and --prompt-file" in capsys.readouterr().err
    empty = tmp_path / "e.txt"
    empty.write_text("\n")
    assert main([*base, "--prompt-file", str(empty)]) == 2
    assert "holds no prompt" in capsys.readouterr().err
