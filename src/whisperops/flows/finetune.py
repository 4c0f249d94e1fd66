"""FineTuneFlow: one versioned, resumable fine-tuning experiment, base model to tuned model.

Run it with Metaflow's own CLI::

    python -m whisperops.flows.finetune run --train data/bank/train/manifest.jsonl \
        --eval data/bank/eval/manifest.jsonl --test data/bank/test/manifest.jsonl \
        --real ../shared/data/speech/manifest.jsonl --output runs/bank --max-steps 60 --freeze-encoder true
    python -m whisperops.flows.finetune resume           # after a failure: finished steps are reused
    python -m whisperops.flows.finetune card view report

Steps: ``start`` checks every input (one clear line, before any expensive work) and prepares the
features (and, with a frozen encoder, the encoder outputs) once; ``evaluate_base`` scores the base
model; ``train`` runs Seq2SeqTrainer (in its own process, or on Ray Train for several workers) through
:func:`whisperops.training.run.finetune`
(best checkpoint by eval WER, exported to CTranslate2 and registered); ``evaluate_tuned`` scores the
exported model the same way (Engine, Whisper's normaliser); ``report`` draws the card: loss and WER
curves, the base-vs-tuned table (WER, CER, relative change) and the worst utterances.
Results: ``Flow("FineTuneFlow").latest_successful_run.data.summary``.
"""

# isort: split
# Sets Metaflow's environment defaults (user name) before metaflow is imported.
import whisperops.flows  # noqa: F401

# isort: split
from metaflow import FlowSpec, Parameter, card, current, step

from whisperops.evaluation.settings import EvalSettings
from whisperops.flows import parameter
from whisperops.training.config import FinetuneConfig

# Flow parameter -> FinetuneConfig field, for the settings the flow exposes as parameters of their own;
# --options takes any other field. Defaults and help come from the field.
SETTINGS = {
    "train_set": "train",
    "eval_set": "eval",
    "output": "output",
    "model": "model",
    "model_name": "name",
    "workers": "workers",
    "max_steps": "max_steps",
    "learning_rate": "learning_rate",
    "batch_size": "batch_size",
    "eval_steps": "eval_steps",
    "freeze_encoder": "freeze_encoder",
    "lora": "lora",
}


def _setting(name: str, required: bool = False) -> Parameter:
    return parameter(FinetuneConfig, name, name.replace("_", "-"), **({"required": True} if required else {}))


class FineTuneFlow(FlowSpec):
    """Prepare data, evaluate the base model, fine-tune (here or on Ray), evaluate the tuned model, report."""

    train_set = _setting("train", required=True)
    eval_set = _setting("eval", required=True)
    test_set = Parameter("test", default="", help="Set scored before and after (default: the eval set).")
    real_set = Parameter("real", default="", help="Optional regression set (general speech) scored before and after.")
    output = _setting("output", required=True)
    model = _setting("model")
    model_name = _setting("name")
    workers = _setting("workers")
    max_steps = _setting("max_steps")
    learning_rate = _setting("learning_rate")
    batch_size = _setting("batch_size")
    eval_steps = _setting("eval_steps")
    freeze_encoder = _setting("freeze_encoder")
    lora = _setting("lora")
    options = Parameter(
        "options",
        default="{}",
        help='JSON of further FinetuneConfig fields, e.g. \'{"freeze_embeddings": true, "warmup_steps": 5}\'.',
    )
    beam_size = parameter(EvalSettings, "beam_size", "beam-size", type=int)  # base and tuned evaluations
    worst = Parameter("worst", type=int, default=5, help="Worst utterances shown per model on the card.")

    @step
    def start(self):
        """Check every input, then prepare features once (cached by content; ``train`` reuses them)."""
        import json

        from whisperops.data.manifest import load_dataset
        from whisperops.errors import OptionError
        from whisperops.training.data import encode_split, prepare_split
        from whisperops.training.model import hf_model_dir
        from whisperops.training.run import preflight, use_encoder_cache

        try:
            extra = json.loads(self.options or "{}")
        except ValueError as err:
            raise OptionError(f"--options {self.options[:60]!r}: not valid JSON ({err})") from err
        if not isinstance(extra, dict):
            raise OptionError(f"--options {self.options[:60]!r}: give a JSON object of FinetuneConfig fields")
        given = {name: getattr(self, attr) for attr, name in SETTINGS.items()}
        given["name"] = given["name"] or None
        cfg = FinetuneConfig.from_dict({**given, **extra}, source="--options")
        cfg.export = True  # the tuned model is evaluated through the same CTranslate2 engine as the base
        checks = preflight(cfg)
        sets = {"test": self.test_set or self.eval_set}
        if self.real_set:
            sets["real"] = self.real_set
        self.eval_rows = {key: [u.to_dict() for u in load_dataset(path)] for key, path in sets.items()}
        self.sources = sets

        model_dir = hf_model_dir(cfg.model)
        prepared = {"train": prepare_split(checks.train, model_dir, "train")}
        prepared["eval"] = prepare_split(checks.eval, model_dir, "eval")
        if use_encoder_cache(cfg):
            prepared = {k: encode_split(v, model_dir) for k, v in prepared.items()}
        self.prepared = {k: v.to_dict() for k, v in prepared.items()}
        self.config = cfg.to_json()
        print(
            f"train {prepared['train'].rows} clips, eval {prepared['eval'].rows}, "
            + ", ".join(f"{k} {len(v)}" for k, v in self.eval_rows.items())
        )
        self.next(self.evaluate_base)

    @step
    def evaluate_base(self):
        """Score the base model on the test (and real) sets, as ``whisperops evaluate`` does."""
        self.base_runs = self._evaluate("base", self.model)
        self.next(self.train)

    @step
    def train(self):
        """Seq2SeqTrainer (here, or on Ray Train); the best checkpoint by eval WER is exported and registered."""
        from whisperops.training.run import finetune, last_checkpoint, local_checkpoints

        cfg = FinetuneConfig.from_json(self.config)
        # `resume` of a run whose training crashed: continue from its last checkpoint (a fresh run
        # over an earlier run's checkpoints was refused in start).
        cfg.resume = bool(current.origin_run_id) and last_checkpoint(local_checkpoints(cfg.output_path)) is not None
        result = finetune(cfg)
        self.finetune = result.to_dict()
        self.history = result.history
        self.tuned_model = result.registered_name
        print(f"best step {result.best_step}, eval WER {result.best_eval_wer}; registered {result.registered_name}")
        self.next(self.evaluate_tuned)

    @step
    def evaluate_tuned(self):
        """Score the exported tuned model on the same sets with the same engine and settings."""
        self.tuned_runs = self._evaluate("tuned", self.tuned_model)
        self.next(self.report)

    @card(type="blank", id="finetune")
    @step
    def report(self):
        """Base vs tuned per set, loss/WER curves and worst utterances on the card; ``summary`` artifact."""
        from metaflow.cards import Image, Markdown, Table

        from whisperops.evaluation.metrics import pct
        from whisperops.training import report

        comparisons = self._comparisons()
        self.summary = report.summary(comparisons)
        self.comparisons = {k: c.to_dict(alignment=False) for k, c in comparisons.items()}
        ft = self.finetune
        c = current.card["finetune"]
        c.append(
            Markdown(
                f"# Fine-tuning {self.model} → `{self.tuned_model}`\n\n"
                f"{ft['data']['train']['rows']} training clips, {ft['data']['max_steps']} steps, "
                f"best checkpoint at step {ft['best_step']} (eval WER {pct(ft['best_eval_wer'])}); "
                f"training + export took {ft['wall_s']:.0f} s"
            )
        )
        c.append(Markdown("## Base vs tuned"))
        c.append(Table(data=report.table_rows(comparisons), headers=list(report.TABLE_COLUMNS)))
        if self.history:
            c.append(Markdown("## Loss and eval WER"))
            c.append(Image(report.plot_history(self.history), label="loss and eval WER by step"))
        for key, comp in comparisons.items():
            c.append(Markdown(f"## Worst utterances on {key}\n\n" + report.worst_markdown(comp, self.worst)))
        self.next(self.end)

    @step
    def end(self):
        """Print the table; say where the model and the results are."""
        from whisperops.evaluation.metrics import pct

        for key, s in self.summary.items():
            print(
                f"{key}: WER {pct(s['base_wer'])} -> {pct(s['tuned_wer'])} ({pct(s['wer_relative_change'], True)}), "
                f"CER {pct(s['base_cer'])} -> {pct(s['tuned_cer'])}"
            )
        print(f"tuned model: whisperops transcribe --model {self.tuned_model}")
        print(f"read them: Flow('{current.flow_name}')['{current.run_id}'].data.summary, or `card view report`")

    # -----------------------------------------------------------------------------------------

    def _settings(self):
        return EvalSettings(beam_size=self.beam_size, language="en", isolate=False)

    def _evaluate(self, label: str, model: str) -> dict:
        from dataclasses import asdict

        from whisperops.data.manifest import Utterance
        from whisperops.evaluation.compare import ModelSpec, run_model

        runs = {}
        for key, rows in self.eval_rows.items():
            run = run_model(ModelSpec(label, model), [Utterance.from_dict(r) for r in rows], self._settings())
            runs[key] = asdict(run)
            print(f"{label} on {key}: " + (f"failed: {run.error}" if run.error else f"{run.wall_s:.0f} s"))
        return runs

    def _comparisons(self) -> dict:
        from whisperops.data.manifest import Utterance
        from whisperops.evaluation.compare import Hypothesis, RunResult, score_runs

        def load(data: dict) -> RunResult:
            data = dict(data)
            data["hypotheses"] = [Hypothesis(**h) for h in data["hypotheses"]]
            return RunResult(**data)

        out = {}
        for key, rows in self.eval_rows.items():
            runs = [load(self.base_runs[key]), load(self.tuned_runs[key])]
            out[key] = score_runs(
                runs, [Utterance.from_dict(r) for r in rows], self._settings(), {"source": self.sources[key]}
            )
        return out


if __name__ == "__main__":
    FineTuneFlow()
