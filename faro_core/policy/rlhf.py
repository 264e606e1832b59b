"""KL-regularized fine-tuning of the reference LM with a Faro reward (TRL's RLOOTrainer; GPU path).

The objective is ``E_{y∼π}[r(x, y)/s] − β_KL · KL(π‖π_ref)`` over open BBQ questions (context + question as
one user turn, no options — the same prompts as :mod:`faro_core.policy.generate`), where ``r`` is the run's
reward (``faro_core.models.load_scorer``) on the data layer's pair prompt and ``s`` the reward's
within-item standard deviation on the BBQ answers, so ``β_KL`` is in the same units as the Gibbs policy's β
(the exact optimum of this objective is π_ref · exp(r/(s·β_KL))). RLOO (REINFORCE leave-one-out) with
``num_generations`` samples per prompt; TRL's ``beta`` is ``β_KL``.

After training, the fine-tuned LM's answer distribution over held-out BBQ items (the π_ref machinery with
``lm=<output_dir>``) gives accuracy / s_AMB / s_DIS / KL to compare with the Gibbs policy at the same β,
written to ``policy_finetune.json`` in the run.

One command on a GPU::

    faro policy finetune RUN --steps 200 --kl-coef 0.1 --runs-dir runs/policy_bbq --data ../shared/data/bbq

A CPU smoke test (tests/test_policy.py) runs 2 steps with tiny generations so the path never rots.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faro_core.errors import FaroError
from faro_core.store.runs import Run


@dataclass
class RLOOSettings:
    """RLOO hyper-parameters. ``kl_coef``: β_KL in reward-sd units; ``batch_size``: prompts × generations per
    step (must be a multiple of ``num_generations``); ``max_new_tokens``: completion length cap (tokens)."""

    steps: int = 200
    kl_coef: float = 0.1
    num_generations: int = 4
    batch_size: int = 16
    learning_rate: float = 1e-5
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    logging_steps: int = 5
    eval_items: int = 300


def _train_prompts(run: Run, data: str | None, n_prompts: int | None, seed: int) -> Any:
    from faro_core.policy.evaluate import load_items, reward_prompt, run_data_source, select_items
    from faro_core.policy.reference import bbq_user_text

    items = select_items(load_items(data or run_data_source(run)), [run], split="train", seed=seed,
                         limit=n_prompts)
    items = items.assign(user_text=[bbq_user_text(c, q) for c, q in zip(items["context"], items["question"])],
                         reward_prompt=reward_prompt(items))
    return items


def finetune(run: Run, lm: str | None = None, settings: RLOOSettings | None = None, data: str | None = None,
             output_dir: str | Path | None = None, n_prompts: int | None = None, save: bool = True,
             evaluate: bool = True, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fine-tune the LM with RLOO against ``run``'s reward; returns (and writes) a summary dict.

    ``n_prompts``: training prompts (from the run's train split; None = all). ``output_dir``: where the
    fine-tuned model goes (default ``<run>/policy_rloo``). ``save=False`` / ``evaluate=False`` skip writing
    the model / the BBQ evaluation (smoke tests).
    """
    import torch
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    from faro_core.policy.evaluate import run_scorer
    from faro_core.policy.lm import _cached_dir, lm_name, load_lm, resolve_lm

    say = progress or (lambda s: None)
    st = settings or RLOOSettings()
    if st.steps < 1 or st.num_generations < 2 or st.batch_size % st.num_generations:
        raise FaroError("RLOO needs steps ≥ 1, num_generations ≥ 2 and batch_size a multiple of num_generations")
    if st.kl_coef < 0:
        raise FaroError("--kl-coef must be ≥ 0")
    _, gguf = resolve_lm(lm)
    load_lm(lm)  # materializes the safetensors cache of a GGUF model
    model_path = str(_cached_dir(lm)) if gguf else resolve_lm(lm)[0]
    items = _train_prompts(run, data, n_prompts, st.seed)
    say(f"RLOO: {len(items)} training prompts, {st.steps} steps, KL coef {st.kl_coef}, model {lm_name(lm)}")

    scorer = run_scorer(run)
    ans_r = np.asarray(scorer.score([p for p in items["reward_prompt"] for _ in range(3)],
                                    [str(a) for ans in items["answers"] for a in ans]), dtype=np.float64)
    centred = ans_r.reshape(-1, 3)
    # within-item sd, the convention of faro_core.policy.gibbs.standardize
    scale = float(np.sqrt(np.mean((centred - centred.mean(1, keepdims=True)) ** 2))) or 1.0

    def faro_reward(prompts: list[Any], completions: list[Any], reward_prompt: list[str],
                    **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        r = np.asarray(scorer.score(list(reward_prompt), texts), dtype=np.float64) / scale
        return [float(x) for x in r]

    faro_reward.__name__ = f"faro_{run.run_id}"
    ds = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": u}] for u in items["user_text"]],
        "reward_prompt": list(items["reward_prompt"]),
    })
    out_dir = Path(output_dir) if output_dir else run.file("policy_rloo")
    cuda = torch.cuda.is_available()
    args = RLOOConfig(
        output_dir=str(out_dir), max_steps=st.steps, per_device_train_batch_size=st.batch_size,
        num_generations=st.num_generations, max_completion_length=st.max_new_tokens,
        temperature=st.temperature, top_p=st.top_p, beta=st.kl_coef, learning_rate=st.learning_rate,
        logging_steps=st.logging_steps, save_strategy="no", report_to="none", seed=st.seed,
        use_cpu=not cuda, bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        gradient_accumulation_steps=1, dataloader_num_workers=0,
        model_init_kwargs={"dtype": torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32},
    )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    trainer = RLOOTrainer(model=model_path, reward_funcs=[faro_reward], args=args, train_dataset=ds,
                          processing_class=tok)
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    say(f"RLOO done in {seconds:.0f} s")
    history = [h for h in trainer.state.log_history if isinstance(h, dict)]
    summary: dict[str, Any] = {
        "run_id": run.run_id, "lm": lm_name(lm), "settings": asdict(st), "n_prompts": int(len(items)),
        "reward_scale_sd": scale, "seconds": seconds, "device": "cuda" if cuda else "cpu",
        "output_dir": str(out_dir) if save else None, "history": history,
    }
    if save:
        trainer.save_model(str(out_dir))
        tok.save_pretrained(str(out_dir))
    if save and evaluate:
        summary["bbq"] = evaluate_finetuned(run, out_dir, lm=lm, data=data, n_items=st.eval_items,
                                            kl_coef=st.kl_coef, seed=st.seed)
    del trainer
    if save:
        run.write("policy_finetune.json", summary)
    return summary


def evaluate_finetuned(run: Run, model_dir: str | Path, lm: str | None = None, data: str | None = None,
                       n_items: int = 300, kl_coef: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """BBQ scores of the fine-tuned LM's answer distribution on the run's test items, next to π_ref's and
    the Gibbs policy's at β = ``kl_coef`` (same items, same reward)."""
    from faro_core.policy.evaluate import load_items, run_data_source, run_rewards, select_items
    from faro_core.policy.gibbs import bbq_scores, gibbs_log_policy, kl_divergence, standardize
    from faro_core.policy.reference import reference_logprobs

    items = select_items(load_items(data or run_data_source(run)), [run], split="test", seed=seed,
                         limit=n_items)
    log_ref = reference_logprobs(items, lm=lm)
    log_ft = reference_logprobs(items, lm=str(model_dir), use_cache=False)
    z = standardize(run_rewards(run, items))
    beta = kl_coef if kl_coef > 0 else math.inf
    log_gibbs = gibbs_log_policy(log_ref, z, beta)
    out = {"n_items": int(len(items)), "beta": kl_coef}
    for name, lp in (("reference", log_ref), ("finetuned", log_ft), ("gibbs", log_gibbs)):
        sc = bbq_scores(np.exp(lp), items)
        sc["kl"] = float(np.mean(kl_divergence(lp, log_ref)))
        sc["expected_reward"] = float(np.mean(np.sum(np.exp(lp) * z, axis=1)))
        out[name] = sc
    return out
