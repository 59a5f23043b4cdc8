"""PreferenceProver: proof style round trip, batched log-probabilities, Eq. 5 selection, training and proving."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from training_utils import make_model, make_tokenizer, rule_rows
from trl import SFTConfig

from trl_gram.training.denoise import DenoiseRules
from trl_gram.training.prover import (
    PROOF_PREFIX,
    PreferenceProver,
    ProverConfig,
    eq5_score,
    proof_to_rationale,
    rationale_to_proof,
)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def test_proof_style_is_reversible():
    rationale = "Feedback: ...\nConclusion: Response A is better."
    proof = rationale_to_proof(rationale)
    assert proof.startswith(PROOF_PREFIX) and proof_to_rationale(proof) == rationale
    assert proof_to_rationale("  no prefix here ") == "no prefix here"


def test_eq5_score():
    assert eq5_score(-10.0, -20.0) == -0.5
    assert eq5_score(-30.0, -100.0) == pytest.approx(-0.3)
    assert eq5_score(-1.0, 0.0) == -math.inf


def test_sequence_logprobs_match_a_naive_computation(tok):
    model = make_model(tok, seed=1).eval()
    prover = PreferenceProver(model, tok, ProverConfig(token_budget=64))
    contexts = [tok.encode("Q: apple"), tok.encode("Which one? river stone"), tok.encode("x")]
    conts = [tok.encode(" is good"), tok.encode(" maple"), tok.encode(" ocean piano lemon")]
    got = prover.sequence_logprobs(contexts, conts)
    for c, z, g in zip(contexts, conts, got):
        ids = torch.tensor([c + z])
        with torch.no_grad():
            logp = F.log_softmax(model(ids).logits[0, :-1].float(), -1)
        expected = sum(logp[len(c) - 1 + i, tok_id].item() for i, tok_id in enumerate(z))
        assert g == pytest.approx(expected, abs=1e-4)


class HandScoredProver(PreferenceProver):
    """A prover whose samples and log-probabilities are fixed by hand."""

    def __init__(self, tok, samples, cond, uncond, rules):
        super().__init__(None, tok, ProverConfig(num_samples=len(samples), rules=rules))
        self._samples, self._cond, self._uncond = samples, cond, uncond

    def sample(self, prompts, k=None):
        return [[(s, not s.endswith("...")) for s in self._samples] for _ in prompts]

    def sequence_logprobs(self, contexts, continuations):
        uncond = self.unconditional_ids()
        table = self._uncond if all(list(c) == uncond for c in contexts) else self._cond
        return [table[self.tokenizer.decode(z)] for z in continuations]


def test_reranking_picks_the_highest_eq5_score(tok):
    z1 = rationale_to_proof("Response A is short. Response A is better.")
    z2 = rationale_to_proof("Response A is the better one, it is kind.")
    z3 = rationale_to_proof("Response A names apple. Conclusion: Response A is better.")
    z4 = rationale_to_proof("Conclusion: Response B is better.")  # contradicts the label
    cond = {z1: -10.0, z2: -4.0, z3: -30.0, z4: -1.0}
    uncond = {z1: -20.0, z2: -5.0, z3: -100.0, z4: -50.0}
    # By hand: z1 -> -0.5, z2 -> -0.8, z3 -> -0.3 (best), z4 -> -0.02 but fails the support rule.
    prover = HandScoredProver(tok, [z1, z2, z3, z4], cond, uncond, DenoiseRules(max_rationale_tokens=None))
    (proof,) = prover.prove(["q"], ["apple"], ["river"], ["A"])
    assert proof.scores[:3] == pytest.approx([-0.5, -0.8, -0.3])
    assert proof.scores[3] == -math.inf
    assert proof.rationale == proof_to_rationale(z3) and proof.score == pytest.approx(-0.3)
    # With the support rule off, the generic-looking z4 wins on Eq. 5.
    off = HandScoredProver(tok, [z1, z2, z3, z4], cond, uncond, DenoiseRules(check_support=False))
    assert off.prove(["q"], ["apple"], ["river"], ["A"])[0].rationale == proof_to_rationale(z4)
    # Nothing passes: no proof.
    none = HandScoredProver(tok, [z4], cond, uncond, DenoiseRules())
    assert none.prove(["q"], ["a"], ["b"], ["A"])[0].rationale is None
    # A proof cut off by max_new_tokens is not selectable, however well it scores.
    z5 = rationale_to_proof("Response A is") + "..."
    cut = HandScoredProver(tok, [z1, z5], {**cond, z5: -1.0}, {**uncond, z5: -100.0}, DenoiseRules())
    (proof,) = cut.prove(["q"], ["apple"], ["river"], ["A"])
    assert proof.scores[1] == -math.inf and proof.rationale == proof_to_rationale(z1)


def test_prover_trains_and_proves_on_a_tiny_model(tok, tmp_path):
    model = make_model(tok, seed=2)
    cfg = ProverConfig(num_samples=3, max_new_tokens=24, max_length=512, temperature=1.0, token_budget=4096)
    prover = PreferenceProver(model, tok, cfg)
    rows = rule_rows(32, seed=4, with_rationale=True)
    train = prover.training_dataset(Dataset.from_list(rows))
    ex = train[0]
    start = next(i for i, lab in enumerate(ex["labels"]) if lab != -100)
    assert tok.decode(ex["input_ids"][start:]).startswith(PROOF_PREFIX)
    assert "[The Better Response]\nResponse" in tok.decode(ex["input_ids"][:start])
    args = SFTConfig(
        str(tmp_path / "prover"),
        max_steps=4,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        disable_tqdm=True,
        max_length=512,
    )
    before = [p.detach().clone() for p in model.parameters()]
    trainer = prover.train(Dataset.from_list(rows), args)
    assert trainer.state.global_step == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, prover.model.parameters()))
    proofs = prover.prove(["apple", "river"], ["maple", "stone"], ["ocean", "lemon"], ["A", "B"])
    assert len(proofs) == 2
    samples = prover.sample([prover.prompt_ids("apple", "maple", "ocean", "A")], k=3)
    assert len(samples[0]) == 3 and all(isinstance(t, str) and isinstance(f, bool) for t, f in samples[0])
    for p in proofs:
        assert len(p.candidates) == 3 and len(p.scores) == 3
        if p.rationale is not None:
            assert p.score == max(p.scores) and math.isfinite(p.score)
    again = prover.prove(["apple", "river"], ["maple", "stone"], ["ocean", "lemon"], ["A", "B"])
    assert [p.candidates for p in again] == [p.candidates for p in proofs]  # seeded sampling
