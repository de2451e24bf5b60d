"""The synthetic text benchmark (llr.data.synthetic_text), tokenizers and token caches
(llr.data.tokens, llr.data.inputs.TextInputs), the prepare/pretrain glue and BERT
(llr.models.bert)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llr.data import synthetic_text as T
from llr.data.inputs import TextInputs
from llr.data.synthetic_text_tokens import prepare_synthetic_text, pretrain_inputs
from llr.data.tokens import load_tokenizer, synthetic_vocab, tokenize_cache
from llr.errors import LLRError
from llr.models.bert import BERT_ARCHS, BertClassifier, build_bert, save_backbone

SMALL = {
    "train": [30, 8, 30, 4, 30, 5],
    "val": [12, 6, 12, 3, 12, 4],
    "test": [10, 5, 10, 3, 10, 3],
}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer("synthetic", tmp_path_factory.mktemp("tok"))


def test_generation_is_deterministic():
    a = T.generate_synthetic_text(3, SMALL)
    b = T.generate_synthetic_text(3, SMALL)
    pd.testing.assert_frame_equal(a, b)
    c = T.generate_synthetic_text(4, SMALL)
    assert not a["text"].equals(c["text"])
    assert list(a.columns) == ["split", "y", "s", "text"]
    assert list(pd.unique(a["split"])) == ["train", "val", "test"]


def test_changing_one_group_leaves_others():
    a = T.generate_synthetic_text(3, SMALL)
    sizes = dict(SMALL, train=[30, 8, 30, 9, 30, 5])
    b = T.generate_synthetic_text(3, sizes)

    def pick(df, g):
        return sorted(df.loc[(df.split == "train") & (df.y * 2 + df.s == g), "text"])

    for g in (0, 1, 2, 4, 5):
        assert pick(a, g) == pick(b, g)
    assert set(pick(a, 3)) < set(pick(b, 3))
    pd.testing.assert_frame_equal(
        a[a.split != "train"].reset_index(drop=True), b[b.split != "train"].reset_index(drop=True)
    )


def test_group_counts_equal_sizes():
    df = T.generate_synthetic_text(0, SMALL)
    for split, counts in SMALL.items():
        sub = df[df.split == split]
        assert np.bincount(sub.y * 2 + sub.s, minlength=6).tolist() == counts
    # defaults: MultiNLI's shape, usable minority groups
    sizes = T.resolve_sizes(None)
    for counts in sizes.values():
        assert counts[1] > counts[3] + counts[5]  # negation goes with contradiction
        assert all(counts[g] < counts[g - 1] for g in (1, 3, 5))
    train = np.array(sizes["train"]).reshape(3, 2)
    assert train.sum(1).max() == train.sum(1).min()  # class-balanced a priori
    # group-ratio subsets of train and of the held-out half of val; WGA to a few points
    assert min(sizes["train"]) >= 40 and min(sizes["val"]) >= 40 and min(sizes["test"]) >= 80
    assert T.resolve_sizes(None, "synth_civilcomments") == T.CIVILCOMMENTS.default_sizes


def test_bad_sizes_rejected():
    with pytest.raises(LLRError, match="sizes"):
        T.generate_synthetic_text(0, {"train": [1, 2, 3]})
    with pytest.raises(LLRError, match="sizes key"):
        T.generate_synthetic_text(0, {"dev": [1] * 6})
    with pytest.raises(LLRError, match="core_noise"):
        T.generate_synthetic_text(0, SMALL, core_noise=1.5)


def test_spurious_token_iff_s_and_key():
    df = T.generate_synthetic_text(1, {"train": [300] * 6, "val": [1] * 6, "test": [1] * 6}, core_noise=0.2)
    neg = df["text"].map(T.has_negation)
    assert (neg == (df["s"] == 1)).all()
    n_neg = df["text"].map(lambda t: sum(w in T.NEGATIONS for w in t.split()))
    assert (n_neg == df["s"]).all()
    weak = df["text"].map(T.is_weak)
    core = df["text"].map(T.core_class)
    assert (core[~weak] == df["y"][~weak]).all()
    assert abs(weak.mean() - 0.2) < 0.03
    # the weak-key rate does not depend on the group
    rates = weak.groupby(df["y"] * 2 + df["s"]).mean()
    assert rates.between(0.12, 0.28).all()
    # a weak key hints at the class or at its confusable one
    conf = df["y"][weak].map(dict(enumerate(T.MULTINLI.confusions)))
    assert ((core[weak] == df["y"][weak]) | (core[weak] == conf)).all()
    lengths = df["text"].str.split().str.len()
    assert lengths.between(T.MIN_WORDS, T.MAX_WORDS).all()
    words = set(w for t in df["text"] for w in t.split())
    assert words <= set(synthetic_vocab())
    clean = T.generate_synthetic_text(1, SMALL, core_noise=0.0)
    assert (clean["text"].map(T.core_class) == clean["y"]).all()
    assert not clean["text"].map(T.is_weak).any()


def test_key_lookup():
    assert T.key_of("the man disputes a dog") == ("synth_multinli", 0, False)
    assert T.key_of("nobody accepts a dog") == ("synth_multinli", 1, True)
    assert T.key_of("a stupid male dog") == ("synth_civilcomments", 1, False)
    assert T.core_class("the man wonders") == 2 and T.is_weak("the man wonders")
    assert T.has_spurious("a gay man", "synth_civilcomments") and not T.has_negation("a gay man")
    with pytest.raises(LLRError, match="key word"):
        T.core_class("the man and a dog")
    with pytest.raises(LLRError, match="unknown stand-in"):
        T.generate_synthetic_text(0, dataset="synth_imdb")


def test_default_generation_fast_and_short():
    import time

    t0 = time.perf_counter()
    df = T.generate_synthetic_text(0)
    assert time.perf_counter() - t0 < 2.0
    assert len(df) == sum(sum(c) for c in T.DEFAULT_SIZES.values())
    assert df["text"].str.split().str.len().max() <= T.MAX_WORDS <= 40


def test_pretrain_text_balanced_and_distinct():
    p = T.pretrain_text(0, 62)
    assert list(p.columns) == ["y", "s", "g", "text"]
    assert np.bincount(p["g"], minlength=6).tolist() == [11, 11, 10, 10, 10, 10]
    assert (p["g"] == 2 * p["y"] + p["s"]).all()
    assert (p["text"].map(T.has_negation) == (p["s"] == 1)).all()
    pd.testing.assert_frame_equal(p, T.pretrain_text(0, 62))
    bench = set(T.generate_synthetic_text(0, SMALL)["text"])
    assert not bench & set(p["text"])
    with pytest.raises(LLRError):
        T.pretrain_text(0, 3)
    # same language as the benchmark: strong keys give the class
    q = T.pretrain_text(1, 1200, core_noise=0.0)
    assert (q["text"].map(T.core_class) == q["y"]).all()


def test_tokenizer_round_trip(tok):
    df = T.generate_synthetic_text(0, SMALL)
    enc = tok(df["text"].tolist()[:20])
    for t, ids in zip(df["text"], enc["input_ids"]):
        assert len(ids) == len(t.split()) + 2  # one token a word, plus [CLS] [SEP]
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == t
    assert len(tok) == len(synthetic_vocab())
    assert tok.convert_ids_to_tokens(list(range(5))) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # the written folder loads through the generic path too
    again = load_tokenizer(tok.name_or_path)
    assert again(df["text"][0])["input_ids"] == tok(df["text"][0])["input_ids"]


def test_real_tokenizer_offline_error(tmp_path):
    with pytest.raises(LLRError, match="model path"):
        load_tokenizer(str(tmp_path / "no-such-model"))


def test_token_cache_shapes_padding_and_reuse(tok, tmp_path):
    texts = ["the dog agrees with the cat", "a cat", "the old man never disputes over a red car today"]
    out = tmp_path / "cache" / "tokens.npz"
    tokenize_cache(texts, tok, 64, out)
    z = np.load(out)
    lengths = [len(t.split()) + 2 for t in texts]
    assert z["input_ids"].shape == (3, max(lengths))
    assert z["attention_mask"].sum(1).tolist() == lengths
    assert (z["input_ids"][z["attention_mask"] == 0] == tok.pad_token_id).all()
    assert z["input_ids"].dtype == np.int32 and z["token_type_ids"].shape == (3, max(lengths))
    assert [p.name for p in out.parent.iterdir()] == ["tokens.npz"]  # no temporary left
    mtime = out.stat().st_mtime_ns
    tokenize_cache(texts, tok, 64, out)
    assert out.stat().st_mtime_ns == mtime  # same inputs: kept
    tokenize_cache(texts, tok, 5, out)  # truncation, different length: rewritten
    assert np.load(out)["input_ids"].shape == (3, 5)
    tokenize_cache(texts, tok, 16, out, pad_to_max=True)
    assert np.load(out)["input_ids"].shape == (3, 16)
    # pairs get segment ids
    tokenize_cache([("the dog", "a cat sits")], tok, 64, tmp_path / "pairs.npz")
    zp = np.load(tmp_path / "pairs.npz")
    assert zp["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]]


def test_token_cache_atomic_on_failure(tok, tmp_path, monkeypatch):
    out = tmp_path / "tokens.npz"

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError):
        tokenize_cache(["a cat"], tok, 8, out)
    assert list(tmp_path.iterdir()) == []


def test_text_inputs_batch(tok, tmp_path):
    texts = ["a cat", "the dog agrees with the cat", "a dog"]
    inputs = TextInputs(tokenize_cache(texts, tok, 64, tmp_path / "t.npz"))
    assert inputs.n == 3 and len(inputs) == 3
    b = inputs.batch(np.array([2, 0]), train=True, gen=torch.Generator())
    assert set(b) == {"input_ids", "attention_mask", "token_type_ids"}
    assert b["input_ids"].shape == (2, 4) and b["input_ids"].dtype == torch.long  # trimmed to the batch
    assert b["input_ids"][1].tolist() == tok("a cat")["input_ids"]
    assert inputs.batch(np.array([1]), train=False, gen=None)["input_ids"].shape == (1, 8)
    with pytest.raises(LLRError, match="missing"):
        TextInputs(tmp_path / "nope.npz")


def test_build_bert_shapes_and_no_decay(tok):
    torch.manual_seed(0)
    m = build_bert("bert-tiny-synth", 3)
    assert m.dim == 64 and m.backbone.bert.config.vocab_size == len(tok)
    b = {k: torch.tensor(v) for k, v in tok(["the dog agrees with", "a cat"], padding=True).items()}
    m.eval()
    assert m(b).shape == (2, 3) and m.embed(b).shape == (2, 64)
    emb = m.embed(b)
    assert torch.allclose(m(b), m.head(emb))  # eval: no dropout between embed and head
    assert torch.allclose(emb, m.backbone.bert(**b).pooler_output)
    nd = m.no_decay_names()
    names = dict(m.named_parameters())
    assert nd <= set(names)
    assert "head.bias" in nd and "head.weight" not in nd
    assert "backbone.bert.embeddings.LayerNorm.weight" in nd
    assert all(n.endswith("bias") or "LayerNorm" in n for n in nd)
    assert {n for n in names if n.endswith("bias") or "LayerNorm" in n} == nd
    assert not any("word_embeddings" in n or "dense.weight" in n for n in nd)
    m.reset_head(2)
    assert m(b).shape == (2, 2)


def test_build_bert_configs_and_errors(tmp_path):
    from transformers import BertConfig

    with pytest.raises(LLRError, match="unknown BERT"):
        build_bert("bert-huge", 2)
    with pytest.raises(LLRError, match="unknown option"):
        build_bert("bert-tiny-synth", 2, colour="red")
    with pytest.raises(LLRError, match="model path"):
        build_bert("bert-tiny", 2, pretrained_path=str(tmp_path / "nothing-here"))
    with pytest.raises(LLRError, match="model path"):
        build_bert("bert-tiny", 2, pretrained_path="no-such-org/no-such-bert")
    small = build_bert("bert-tiny-synth", 2, hidden_size=32, intermediate_size=64)
    assert small.dim == 32
    # bert-tiny's published shape (random init here; no downloads in tests)
    cfg = BERT_ARCHS["bert-tiny"][1]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["intermediate_size"]) == (
        128,
        2,
        2,
        512,
    )
    assert BertConfig(**cfg).hidden_size == 128


def test_backbone_save_and_load(tmp_path, tok):
    torch.manual_seed(1)
    m = build_bert("bert-tiny-synth", 6)
    b = {k: torch.tensor(v) for k, v in tok(["the dog agrees with"]).items()}
    m.eval()
    ref = m.embed(b)
    folder = save_backbone(m, tmp_path / "pretrained")
    m2 = build_bert("bert-tiny-synth", 3, pretrained_path=str(folder)).eval()
    assert torch.allclose(m2.embed(b), ref, atol=1e-6)
    torch.save(m.state_dict(), tmp_path / "clf.pt")
    m3 = build_bert("bert-tiny-synth", 3, pretrained_path=str(tmp_path / "clf.pt")).eval()
    assert torch.allclose(m3.embed(b), ref, atol=1e-6)


def test_build_model_dispatches_to_bert():
    from llr.models.factory import build_model

    m = build_model("bert-tiny-synth", 3)
    assert isinstance(m, BertClassifier)


def test_tiny_training_fits_balanced_set(tok, tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = T.pretrain_text(0, 240, core_noise=0.0)
    test = T.pretrain_text(1, 120, core_noise=0.0)
    tr = TextInputs(tokenize_cache(train["text"].tolist(), tok, 64, tmp_path / "tr.npz"))
    te = TextInputs(tokenize_cache(test["text"].tolist(), tok, 64, tmp_path / "te.npz"))
    m = build_bert("bert-tiny-synth", 3)
    nd = m.no_decay_names()
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in m.named_parameters() if n not in nd], "weight_decay": 1e-4},
            {"params": [p for n, p in m.named_parameters() if n in nd], "weight_decay": 0.0},
        ],
        lr=1e-3,
    )
    y = torch.tensor(train["y"].values)
    rng = np.random.default_rng(0)
    m.train()
    for _ in range(120):
        idx = rng.choice(tr.n, 32, replace=False)
        loss = torch.nn.functional.cross_entropy(m(tr.batch(idx, True, None)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        pred = m(te.batch(np.arange(te.n))).argmax(1).numpy()
    acc = (pred == test["y"].values).mean()
    assert acc > 0.8, acc  # chance is 1/3


def test_prepare_synthetic_text_and_pretrain_inputs(tmp_path):
    from llr.data.registry import get_spec, read_metadata

    spec = get_spec("synth_multinli")
    params = {"seed": 2, "sizes": SMALL, "core_noise": 0.1, "tokenizer_dir": str(tmp_path / "tok")}
    prepare_synthetic_text(spec, params, tmp_path / "metadata.csv", tmp_path / "tokens.npz")
    meta = read_metadata(tmp_path / "metadata.csv")
    assert list(meta.columns) == ["idx", "split", "y", "s", "g", "text"]
    assert meta["text"].tolist() == T.generate_synthetic_text(2, SMALL, core_noise=0.1)["text"].tolist()
    inputs = TextInputs(tmp_path / "tokens.npz")
    assert inputs.n == len(meta)
    assert (inputs.lengths == meta["text"].str.split().str.len().to_numpy() + 2).all()
    src, labels, model_kw = pretrain_inputs(spec, {}, 5, 4, str(tmp_path / "tok"))
    assert src.n == 24 and np.bincount(labels).tolist() == [4] * 6
    m = build_bert("bert-tiny-synth", spec.n_groups, **model_kw).eval()
    assert m(src.batch(np.arange(3), False, None)).shape == (3, 6)
