//! `visualrwkv score`: score predictions with a benchmark's official metric — generic items, or
//! an `eval` answer file joined with the benchmark's own annotation files.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use visualrwkv_eval::Metric;
use visualrwkv_eval::annotations::{JoinOptions, join, read_answer_rows};
use visualrwkv_eval::metrics::{read_items, score};

use crate::Res;
use crate::device::DeviceSpec;

/// Flags of `score`.
#[derive(clap::Args)]
pub struct Args {
    /// vqa (VQAv2 / TextVQA soft accuracy), gqa, pope, scienceqa or mme.
    #[arg(long, value_parser = |name: &str| Metric::from_name(name))]
    metric: Metric,
    /// Generic items, one JSON object per line: {"prediction", "answers": [..]} (vqa, gqa) or
    /// {"prediction", "label"} (pope, scienceqa, mme), with optional "category", "choices"
    /// (scienceqa) and "image" (mme).
    #[arg(long, conflicts_with_all = ["annotations", "answers"], required_unless_present_all = ["annotations", "answers"])]
    input: Option<PathBuf>,
    /// The benchmark's annotation file or folder (TextVQA_0.5.1_val.json, GQA's
    /// testdev_balanced_questions.json, POPE's folder of coco_pope_*.json, ScienceQA's
    /// problems.json, MME's MME_Benchmark_release_version), joined with --answers.
    #[arg(long, requires = "answers")]
    annotations: Option<PathBuf>,
    /// An `eval` (or official evaluate.py) answer file.
    #[arg(long, requires = "annotations")]
    answers: Option<PathBuf>,
    /// POPE: the question file that gives each question's category (when the answers lack
    /// metadata.category).
    #[arg(long)]
    questions: Option<PathBuf>,
    /// ScienceQA: the split of pid_splits.json.
    #[arg(long, default_value = "test")]
    split: String,
    /// Write each input line again with its "score" (and "parsed": what the prediction was read
    /// as).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the summary JSON goes (default: beside --out, else beside the input, as
    /// NAME.METRIC.summary.json).
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Accepted for uniformity with the model commands: scoring runs on the CPU.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

fn summary_path(a: &Args, metric: Metric) -> PathBuf {
    if let Some(s) = &a.summary {
        return s.clone();
    }
    let base: &Path = a.out.as_deref().or(a.input.as_deref()).or(a.answers.as_deref()).unwrap_or(Path::new("scores"));
    let stem = base.file_stem().and_then(|s| s.to_str()).unwrap_or("scores");
    base.with_file_name(format!("{stem}.{}.summary.json", metric.name()))
}

/// Runs `score`.
pub fn run(a: Args) -> Res<()> {
    let _ = &a.device;
    let metric = a.metric;
    let (objects, items, mut summary): (Vec<Map<String, Value>>, _, Value) =
        match (&a.input, &a.annotations, &a.answers) {
            (Some(input), _, _) => {
                let (objects, items): (Vec<_>, Vec<_>) = read_items(input, metric)?.into_iter().unzip();
                (objects, items, json!({"input": input}))
            }
            (None, Some(ann), Some(answers)) => {
                let rows = read_answer_rows(answers)?;
                let options = JoinOptions { questions: a.questions.clone(), split: Some(a.split.clone()) };
                let joined = join(metric, ann, rows, &options)?;
                let objects = joined
                    .rows
                    .iter()
                    .zip(&joined.items)
                    .map(|(r, item)| match r {
                        Some(r) => r.object.clone(),
                        None => {
                            let mut m = Map::new();
                            m.insert("text".into(), Value::String(item.prediction.clone()));
                            m.insert("missing".into(), Value::Bool(true));
                            m
                        }
                    })
                    .collect();
                let mut s = json!({"answers": answers, "annotations": ann});
                for (k, v) in joined.notes {
                    s[k] = v;
                }
                (objects, joined.items, s)
            }
            _ => return Err("give --input, or --annotations and --answers".into()),
        };
    if items.is_empty() {
        return Err("nothing to score: the input has no items".into());
    }
    let (scored, result) = score(metric, &items)?;
    if let (Value::Object(into), Value::Object(from)) = (&mut summary, result) {
        for (k, v) in from {
            into.insert(k, v);
        }
    }
    if let Some(out) = &a.out {
        let mut text = String::new();
        for (mut object, s) in objects.into_iter().zip(&scored) {
            object.insert("score".into(), json!(s.score));
            object.insert("parsed".into(), json!(s.parsed));
            text.push_str(&serde_json::to_string(&object)?);
            text.push('\n');
        }
        visualrwkv_checkpoint::write_atomic(out, text.as_bytes())?;
    }
    let path = summary_path(&a, metric);
    let pretty = serde_json::to_string_pretty(&summary)?;
    visualrwkv_checkpoint::write_atomic(&path, format!("{pretty}\n").as_bytes())?;
    println!("{pretty}");
    eprintln!("wrote {}", path.display());
    Ok(())
}
