"""`lmx generate`: the stream, JSON, sampling, beam, best-of and stop paths on a trained tiny run, checked
against lmx.decode.generate on the loaded run, and the error contract (exit 2, one line on stderr)."""

import json

import pytest

from lmx.cli import main

KEYS = {"prompt", "text", "finish_reason", "tokens", "logprob", "mean_logprob", "stop_string", "score"}



@pytest.fixture(scope="module")
def loaded(cli_run):
    from lmx.api import load

    return load(cli_run)


def _generate(capsys, run, *args):
    capsys.readouterr()
    code = main(["generate", "--run", str(run), *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _json_lines(out):
    records = [json.loads(line) for line in out.strip().splitlines()]
    for r in records:
        assert set(r) == KEYS
    return records


def _error(capsys, run, *args, words=()):
    capsys.readouterr()
    code = main(["generate", "--run", str(run), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    return err


def test_stream_prints_prompt_then_greedy_text(cli_run, loaded, capsys):
    from lmx.decode import generate

    out = _generate(capsys, cli_run, "--prompt", "def ", "--max-new-tokens", "8", "--greedy")
    ref = generate(loaded.model, loaded.tokenizer, ["def "], max_new_tokens=8, temperature=0.0)[0]
    assert out.startswith("def " + ref.text + "\n[" + ref.finish_reason + f", {len(ref.tokens)} tokens"), out


def test_json_samples_and_seed(cli_run, loaded, capsys):
    from lmx.decode import generate

    args = ["--prompt", "def ", "--max-new-tokens", "8", "--json", "--num-samples", "2", "--temperature", "0.8",
            "--seed", "1"]
    first = _json_lines(_generate(capsys, cli_run, *args))
    assert len(first) == 2 and all(r["prompt"] == "def " for r in first)
    assert _json_lines(_generate(capsys, cli_run, *args)) == first
    ref = generate(loaded.model, loaded.tokenizer, ["def "], max_new_tokens=8, num_samples=2, temperature=0.8, seed=1)
    assert [r["text"] for r in first] == [c.text for c in ref]
    assert [r["logprob"] for r in first] == pytest.approx([c.logprob for c in ref], abs=1e-5)


def _mean_logprob(model, tokenizer, prompt: str, completion) -> float:
    """Mean log-probability of a completion's tokens (and of its EOS, when it ended with one) under one
    full forward of prompt + completion, softmax over the tokenizer's ids, in float64."""
    import jax.numpy as jnp
    import numpy as np

    prompt_ids = tokenizer.encode(prompt)
    scored = list(completion.tokens) + ([tokenizer.eos_id] if completion.finish_reason == "eos" else [])
    logits = np.asarray(model(jnp.asarray([prompt_ids + scored], jnp.int32))[0], np.float64)[:, : tokenizer.vocab_size]
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return float(np.mean([logp[len(prompt_ids) - 1 + j, t] for j, t in enumerate(scored)]))


def test_beams_and_best_of(cli_run, loaded, capsys):
    from lmx.decode import generate

    beams = _json_lines(_generate(capsys, cli_run, "--prompt", "def ", "--max-new-tokens", "6", "--beams", "2",
                                  "--num-samples", "2", "--json"))
    assert len(beams) == 2 and beams[0]["score"] >= beams[1]["score"]
    best = _json_lines(_generate(capsys, cli_run, "--prompt", "def ", "--max-new-tokens", "6", "--best-of", "3",
                                 "--temperature", "1.0", "--seed", "2", "--json"))
    assert len(best) == 1 and best[0]["score"] == pytest.approx(best[0]["mean_logprob"])
    # the 3 candidates (the same seeded draws), each scored independently: the best is the highest mean
    candidates = generate(loaded.model, loaded.tokenizer, ["def "], max_new_tokens=6, num_samples=3,
                          temperature=1.0, seed=2)
    scores = [_mean_logprob(loaded.model, loaded.tokenizer, "def ", c) for c in candidates]
    winner = int(max(range(3), key=lambda i: scores[i]))
    assert winner == 1  # seed 2: neither the first nor the last sample is the best
    assert scores[winner] > max(s for i, s in enumerate(scores) if i != winner) + 1e-3  # no near-tie
    assert best[0]["text"] == candidates[winner].text
    assert best[0]["tokens"] == len(candidates[winner].tokens)
    assert best[0]["score"] == pytest.approx(scores[winner], abs=1e-5)


def test_stop_cuts(cli_run, loaded, capsys):
    from lmx.decode import generate

    # sampled: the 8-step model's greedy output is only spaces
    sample = ["--temperature", "1.0", "--seed", "0"]
    full = generate(loaded.model, loaded.tokenizer, ["def "], max_new_tokens=12, temperature=1.0, seed=0)[0].text
    cut = next(i for i in range(1, len(full) - 1)
               if full[i : i + 2].isascii() and full[i : i + 2].isprintable() and full.find(full[i : i + 2]) == i)
    stop = full[cut : cut + 2]
    record = _json_lines(_generate(capsys, cli_run, "--prompt", "def ", "--max-new-tokens", "12", *sample,
                                   "--stop", stop, "--json"))[0]
    assert record["text"] == full[:cut]
    assert record["finish_reason"] == "stop" and record["stop_string"] == stop


@pytest.mark.parametrize("args, words", [
    (["--top-p", "1.5"], ["top_p"]),
    (["--temperature", "-1"], ["temperature"]),
    (["--top-k", "-1"], ["--top-k", ">= 1"]),
    (["--beams", "2", "--temperature", "0.5"], ["beam search", "temperature"]),
    (["--greedy", "--temperature", "0.7"], ["--greedy", "--temperature"]),
])
def test_bad_options_exit_2(cli_run, capsys, args, words):
    _error(capsys, cli_run, "--prompt", "def ", "--max-new-tokens", "2", *args, words=words)


def test_prompt_longer_than_context(cli_run, capsys):
    prompt = "def function_with_a_long_name(argument):"
    _error(capsys, cli_run, "--prompt", prompt, "--context-len", "8", "--max-new-tokens", "2", "--json",
           words=["prompt 0", "--truncate-prompt"])
    records = _json_lines(_generate(capsys, cli_run, "--prompt", prompt, "--context-len", "8", "--max-new-tokens",
                                    "2", "--truncate-prompt", "--json", "--greedy"))
    assert len(records) == 1 and records[0]["tokens"] >= 1


def test_missing_run(tmp_path, capsys):
    _error(capsys, tmp_path / "nothing", "--prompt", "x", words=["--run", "not an lmx run directory"])


def test_draft_run_with_other_tokenizer(cli_run, tmp_path, capsys, cache_dir):
    other = tmp_path / "bytes_run"
    assert main(["train", "--config", "tiny", "--quiet", "--run-dir", str(other), "--set",
                 f"data.cache_dir={cache_dir}", "--set", "data.tokenizer=bytes", "--set", "train.steps=4"]) == 0
    _error(capsys, cli_run, "--prompt", "def ", "--max-new-tokens", "2", "--greedy", "--draft-run", str(other),
           words=["--draft-run", "tokenizer"])
