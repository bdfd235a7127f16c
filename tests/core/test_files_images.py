"""The one atomic writer (whole-or-absent files that honour the umask) and the one image home (uint8, grids)."""

import json
import os
import stat

import numpy as np
import pytest
import torch

from priorswap.toolkit.files import atomic_dir, atomic_write, write_text_atomic
from priorswap.toolkit.images import make_grid, quantize, save_grid, to_uint8

from factories import save_dit_pipeline


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


def write_everything(root):
    """Every writer that goes through atomic_write / atomic_dir, once; returns (files, folders) written."""
    from PIL import Image

    from priorswap.callbacks import PriorSwapEval
    from priorswap.toolkit.commands.sample_unet import write_outputs
    from priorswap.toolkit.files import save_npz_atomic
    from priorswap.toolkit.metrics import FeatureStats
    from priorswap.toolkit.metrics.reference import save_stats
    from priorswap.toolkit.protocols.generate import Method, SampleStore
    from priorswap.toolkit.protocols.runner import claim_output

    files, folders = [], []
    save_npz_atomic(str(root / "samples.npz"), arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    files.append(root / "samples.npz")
    save_grid(str(root / "grid.png"), [torch.rand(2, 3, 8, 8)] * 2, ["vanilla", "swapped"])
    files.append(root / "grid.png")
    write_text_atomic(str(root / "table.md"), lambda f: f.write("| a |\n"))
    files.append(root / "table.md")

    cb = PriorSwapEval(extractor=torch.nn.Identity(), output=str(root / "eval" / "cfg_eval.csv"))
    cb.rows = [{"step": 2, "fd_vanilla_g1.5": 1.0}]
    cb._write_rows(None)
    files += [root / "eval" / "cfg_eval.csv", root / "eval" / "cfg_eval.jsonl"]

    stats = FeatureStats(4).add(torch.randn(8, 4, dtype=torch.float64))
    save_stats(stats, str(root / "stats" / "ref.safetensors"), {"k": "v"})
    files.append(root / "stats" / "ref.safetensors")

    export = save_dit_pipeline(str(root / "export"), num_classes=3, sample_size=8, latent=False, in_channels=3)
    folders.append(root / "export")
    files += [
        root / "export" / "id2label.json",
        root / "export" / "model_index.json",
        root / "export" / "transformer" / "diffusion_pytorch_model.safetensors",
    ]
    folders.append(os.path.join(export, "transformer"))

    SampleStore(str(root / "proto")).save("vanilla", "g1", "item", 0, np.zeros((4, 4, 3), np.uint8))
    files.append(root / "proto" / "samples" / "vanilla" / "g1" / "item_0.png")
    claim_output(str(root / "proto"), {"kind": "ip2p"}, [Method("vanilla")])
    files.append(root / "proto" / "run.json")

    write_outputs(
        str(root / "unet"),
        Image.new("RGB", (8, 8)),
        {"vanilla": torch.rand(2, 3, 8, 8), "swapped": torch.rand(2, 3, 8, 8)},
        {"k": 1},
    )
    files += [root / "unet" / n for n in ("input.png", "grid.png", "meta.json", "vanilla/000.png", "swapped/001.png")]

    with atomic_dir(str(root / "folder")) as tmp:
        with open(os.path.join(tmp, "x"), "w") as f:
            f.write("x")
    folders.append(root / "folder")
    return files, folders


@pytest.mark.parametrize("umask_value, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_every_writer_honours_the_umask(tmp_path, umask, umask_value, file_mode, dir_mode):
    umask(umask_value)
    files, folders = write_everything(tmp_path)
    assert {str(p): oct(mode(p)) for p in files} == {str(p): oct(file_mode) for p in files}
    assert {str(p): oct(mode(p)) for p in folders} == {str(p): oct(dir_mode) for p in folders}
    leftovers = [
        os.path.join(d, n) for d, subdirs, names in os.walk(tmp_path) for n in names + subdirs if n.endswith(".tmp")
    ]
    assert leftovers == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(path)) as f:
            f.write("half of the new")
            f.flush()
            assert os.path.exists(f.name) and os.path.dirname(f.name) == str(tmp_path)  # the temp file sits next to it
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]

    with pytest.raises(KeyboardInterrupt):
        with atomic_write(str(tmp_path / "new.bin"), "wb") as f:
            f.write(b"x")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["out.txt"]  # no new file, no temp file


def test_npz_writer_failing_mid_write_keeps_the_old_npz(tmp_path):
    from priorswap.toolkit.files import save_npz_atomic

    class Unsavable:
        def __array__(self, *a, **k):
            raise RuntimeError("cannot convert")

    path = str(tmp_path / "s.npz")
    save_npz_atomic(path, arr_0=np.arange(3))
    with pytest.raises(RuntimeError):
        save_npz_atomic(path, arr_0=np.arange(5), extra=Unsavable())
    assert np.load(path)["arr_0"].tolist() == [0, 1, 2]
    assert os.listdir(tmp_path) == ["s.npz"]


def test_a_failed_export_keeps_the_old_export_and_leaves_no_temp(tmp_path):
    from priorswap.toolkit.dit.models import build_dit, dit_scheduler_config
    from priorswap.toolkit.training.export import export_pipeline

    path = save_dit_pipeline(str(tmp_path / "export"), num_classes=3, sample_size=8, latent=False, in_channels=3)
    before = json.loads(open(os.path.join(path, "id2label.json")).read())
    tr = build_dit("tiny", num_classes=3, in_channels=3, sample_size=8)
    with pytest.raises(TypeError):  # the class names cannot be written: fails after the weights are saved
        export_pipeline(tr, None, dit_scheduler_config(), [object()] * 3, path)
    assert json.loads(open(os.path.join(path, "id2label.json")).read()) == before
    assert os.listdir(tmp_path) == ["export"]
    # a successful export replaces the old folder as a whole
    export_pipeline(tr, None, dit_scheduler_config(), ["a", "b", "c"], path)
    assert json.loads(open(os.path.join(path, "id2label.json")).read()) == {"0": "a", "1": "b", "2": "c"}
    assert os.listdir(tmp_path) == ["export"]


def test_atomic_dir_failure_keeps_the_old_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("old")
    with pytest.raises(ValueError):
        with atomic_dir(str(tmp_path / "out")) as tmp:
            (tmp_path / os.path.basename(tmp) / "new").write_text("new")
            raise ValueError
    assert os.listdir(tmp_path / "out") == ["old"] and os.listdir(tmp_path) == ["out"]


def test_exclusive_write_lets_only_the_first_writer_win(tmp_path):
    path = str(tmp_path / "run.json")
    with atomic_write(path, exclusive=True) as f:
        f.write("first")
    with pytest.raises(FileExistsError):
        with atomic_write(path, exclusive=True) as f:
            f.write("second")
    assert open(path).read() == "first" and os.listdir(tmp_path) == ["run.json"]


def test_atomic_write_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError):
        with atomic_write(str(tmp_path / "x"), "a"):
            pass


def test_to_uint8_rounds_like_diffusers_numpy_to_pil():
    from diffusers.image_processor import VaeImageProcessor

    values = [0.0, 0.4 / 255, 0.5 / 255, 1.5 / 255, 2.5 / 255, 0.25, 0.5, 0.7, 0.9, 253.5 / 255, 254.5 / 255, 1.0]
    x = torch.tensor(values, dtype=torch.float32).reshape(1, 1, 3, 4).expand(1, 3, 3, 4).contiguous()
    ours = to_uint8(x)
    theirs = np.asarray(VaeImageProcessor.numpy_to_pil(x.permute(0, 2, 3, 1).numpy())[0])
    assert ours.shape == (1, 3, 4, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours[0], theirs)
    # out-of-range values are clipped, as the sampling code clamps before diffusers' conversion
    assert to_uint8(torch.tensor([-0.2, 1.3]).reshape(1, 1, 1, 2))[0, 0, :, 0].tolist() == [0, 255]


def test_quantize_keeps_layout_and_matches_to_uint8():
    x = torch.rand(2, 3, 5, 7)
    q = quantize(x)
    assert q.dtype == torch.uint8 and q.shape == x.shape
    assert np.array_equal(q.permute(0, 2, 3, 1).numpy(), to_uint8(x))


def test_grid_upscales_small_tiles_and_keeps_large_ones():
    rows = [torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)]
    grid = make_grid(rows)
    assert grid.shape == (3, 2 + 2 * (96 + 2), 2 + 4 * (96 + 2))  # 32 px tiles shown 3x, 2 px white gaps
    first = grid[:, 2:98, 2:98]
    expected = torch.from_numpy(to_uint8(rows[0][:1])[0]).permute(2, 0, 1).float() / 255
    assert torch.equal(first, expected.repeat_interleave(3, 1).repeat_interleave(3, 2))  # nearest neighbour
    assert make_grid([torch.rand(2, 3, 128, 128)]).shape == (3, 2 + 130, 2 + 2 * 130)  # large enough: native size
    assert make_grid(rows, min_tile=0).shape == (3, 2 + 2 * 34, 2 + 4 * 34)
    grey = make_grid([torch.rand(3, 1, 28, 28)])
    assert grey.shape == (3, 2 + 114, 2 + 3 * 114) and torch.equal(grey[0], grey[1])  # grey shown as grey RGB


def test_labelled_grid_adds_margins_with_text_and_keeps_the_tiles():
    rows = [torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)]
    plain = make_grid(rows)
    labelled = make_grid(
        rows, row_labels=["vanilla", "swapped"], col_labels=["tench", "goldfish", "a very long class name indeed"]
    )
    _, h, w = plain.shape
    _, lh, lw = labelled.shape
    top, left = lh - h, lw - w
    assert top > 8 and left > 30  # a line of text above, the longest row label to the left
    assert torch.equal(labelled[:, top:, left:], plain)  # tiles unchanged, just shifted
    assert (labelled[:, :top, left:] < 1).any()  # column labels drawn in the top margin
    assert (labelled[:, top:, :left] < 1).any()  # row labels drawn in the left margin
    assert (labelled[:, :top, :left] == 1).all()  # the corner stays white
    only_rows = make_grid(rows, row_labels=["vanilla", "swapped"])
    assert only_rows.shape[1] == h and only_rows.shape[2] == lw
    # a column label too wide for its tile is cut short: it never spills into the next column's gap
    assert (labelled[:, :top, left + 2 * 98 : left + 2 * 98 + 2] == 1).all()


def test_grid_rejects_mismatched_labels_and_sizes():
    rows = [torch.rand(2, 3, 8, 8)] * 2
    with pytest.raises(ValueError, match="row labels"):
        make_grid(rows, row_labels=["vanilla"])
    with pytest.raises(ValueError, match="column labels"):
        make_grid(rows, col_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="every image"):
        make_grid([torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)])


def test_save_grid_writes_the_labelled_grid_as_png(tmp_path):
    from PIL import Image

    rows = [torch.rand(2, 3, 16, 16)] * 2
    path = tmp_path / "g.png"
    save_grid(str(path), rows, ["vanilla", "swapped"], ["cat", "dog"])
    with Image.open(path) as img:
        saved = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(saved, make_grid(rows, ["vanilla", "swapped"], ["cat", "dog"]))
    assert os.listdir(tmp_path) == ["g.png"]
