"""The two label strategies of a fine-tune, each on its own: where a class's row is, the null row, the table size
read back from a checkpoint's weights, and what a checkpoint keeps (tiny random DiTs, CPU, no training)."""

import torch

from priorswap.toolkit.core.loading import alphas_cumprod, latent_space
from priorswap.toolkit.dit.denoiser import DiTDenoiser, label_embedders
from priorswap.toolkit.dit.lora import LoRASpec
from priorswap.toolkit.dit.models import build_dit, dit_scheduler_config
from priorswap.toolkit.training.labels import FullTable, LoRARows, label_strategy


def tiny(num_classes):
    torch.manual_seed(0)
    return build_dit("tiny", num_classes, in_channels=3, sample_size=16)


def test_full_table_rows_are_the_labels_and_its_own_null_row_follows_them():
    table = label_strategy(None, None, 0, None)
    assert isinstance(table, FullTable)
    net = table.build(tiny(1), 3)
    assert all(emb.embedding_table.weight.shape[0] == 4 for emb in label_embedders(net))
    labels = torch.tensor([0, 2, 1])
    assert torch.equal(table.class_ids(labels), labels) and table.null_id(3) == 3
    state = {f"transformer.{k}": v for k, v in net.state_dict().items()}
    assert table.table_size(state) == 3 and table.table_size({}) is None
    assert table.checkpoint_state(state, net) is state  # every weight trains, so every weight is kept


def test_from_scratch_table_of_the_right_size_is_kept_and_a_pretrained_one_is_replaced():
    net = tiny(3)
    before = label_embedders(net)[0].embedding_table.weight.clone()
    FullTable(None, 0).build(net, 3)
    assert torch.equal(label_embedders(net)[0].embedding_table.weight, before)
    FullTable("some/base", 0).build(net, 3)  # a pretrained base's classes are not the new ones
    assert not torch.equal(label_embedders(net)[0].embedding_table.weight[:3], before[:3])


def test_lora_rows_follow_the_base_null_row_and_the_checkpoint_keeps_only_what_trains(capsys):
    space = latent_space("tiny", dit_scheduler_config(), None, 3)
    base = DiTDenoiser(tiny(10), space)
    rows = label_strategy(LoRASpec(rank=2), "some/base", 0, base)
    assert isinstance(rows, LoRARows)
    net = rows.build(base.transformer, 3)
    assert "3 class rows" in capsys.readouterr().out
    assert rows.null_id(3) == 10  # the base's null row, not the K of the fine-tune
    assert torch.equal(rows.class_ids(torch.tensor([0, 2])), torch.tensor([11, 13]))
    state = {f"transformer.{k}": v for k, v in net.state_dict().items()}
    assert rows.table_size(state) == 3
    kept = rows.checkpoint_state(state, net)
    trainable = {f"transformer.{n}" for n, p in net.named_parameters() if p.requires_grad}
    assert set(kept) == trainable and len(kept) < len(state)


def test_latent_space_takes_the_schedule_the_caller_trains_on():
    sched = dit_scheduler_config()
    own = torch.linspace(0.999, 0.001, 1000, dtype=torch.float64)
    assert torch.equal(latent_space("m", sched, None, 3, own).alphas_cumprod, own)
    assert torch.equal(latent_space("m", sched, None, 3).alphas_cumprod, alphas_cumprod(sched))
