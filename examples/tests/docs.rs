//! The README quotes only figures that `docs/results.json` records, and each recorded figure
//! stands unchanged in every document it names (`docs/performance.md`, …): a re-measured figure
//! changed in one place and not the others fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Deserialize)]
struct Results {
    /// Figure-like text of the README that is a setting, not a measurement (e.g. "95 %" intervals).
    not_measurements: Vec<String>,
    figures: Vec<Figure>,
}

#[derive(Deserialize)]
struct Figure {
    id: String,
    value: String,
    date: String,
    host: String,
    baseline: String,
    command: String,
    #[serde(rename = "in")]
    files: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn results() -> Results {
    serde_json::from_str(&read("docs/results.json")).expect("docs/results.json parses")
}

/// The units a measured figure ends in.
const UNITS: [&str; 6] = ["x", "%", "s", "ms", "minutes", "hours"];

/// Every `N unit` / `N–M unit` in `text` (a number not glued to a word before it; one optional
/// space; a unit of [`UNITS`] ending at a word boundary), e.g. `1.30–1.51x`, `99.6 %`, `5.22 s`.
fn figures_in(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let is_word = |c: char| c.is_alphanumeric() || c == '.' || c == '_';
    let number_at = |mut i: usize| {
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_digit() || (chars[i] == '.' && i > start)) {
            i += 1;
        }
        // A trailing full stop ends a sentence, not the number.
        while i > start && chars[i - 1] == '.' {
            i -= 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() || (i > 0 && is_word(chars[i - 1])) {
            i += 1;
            continue;
        }
        let mut end = number_at(i);
        if end + 1 < chars.len() && chars[end] == '–' && chars[end + 1].is_ascii_digit() {
            end = number_at(end + 1);
        }
        let after = if end < chars.len() && chars[end] == ' ' { end + 1 } else { end };
        let rest: String = chars[after..chars.len().min(after + 8)].iter().collect();
        let unit = UNITS
            .iter()
            .filter(|u| rest.starts_with(**u) && rest[u.len()..].chars().next().is_none_or(|c| !c.is_alphanumeric()));
        if let Some(u) = unit.max_by_key(|u| u.len()) {
            let token: String = chars[i..after].iter().collect::<String>() + u;
            out.push(token);
        }
        i = end.max(i + 1);
    }
    out
}

#[test]
fn the_scanner_finds_figures_and_nothing_else() {
    let text = "prefill 1.30–1.51x, 99.6 % held out, 5.22 s at 24K; 2×64, f32 3 scans, x86-64, 27 minutes.";
    assert_eq!(figures_in(text), ["1.30–1.51x", "99.6 %", "5.22 s", "27 minutes"]);
}

#[test]
fn every_readme_figure_is_recorded_in_results_json() {
    let results = results();
    let recorded: BTreeSet<&str> = results
        .figures
        .iter()
        .filter(|f| f.files.iter().any(|x| x == "README.md"))
        .map(|f| f.value.as_str())
        .chain(results.not_measurements.iter().map(String::as_str))
        .collect();
    let unrecorded: Vec<String> =
        figures_in(&read("README.md")).into_iter().filter(|f| !recorded.contains(f.as_str())).collect();
    assert!(
        unrecorded.is_empty(),
        "README.md quotes figures that docs/results.json does not record (add them with their date, host, \
         baseline and command, and the same figure to docs/performance.md): {unrecorded:?}"
    );
}

#[test]
fn every_recorded_figure_stands_in_its_documents() {
    let results = results();
    let mut ids = BTreeSet::new();
    for f in &results.figures {
        assert!(ids.insert(f.id.as_str()), "{}: id used twice", f.id);
        for (field, v) in [("date", &f.date), ("host", &f.host), ("baseline", &f.baseline), ("command", &f.command)] {
            assert!(!v.trim().is_empty(), "{}: empty {field}", f.id);
        }
        assert!(f.date.len() == 10 && f.date.starts_with("2026-"), "{}: date {:?} is not YYYY-MM-DD", f.id, f.date);
        assert!(!f.files.is_empty(), "{}: names no document", f.id);
        for file in &f.files {
            assert!(read(file).contains(&f.value), "{}: {file} does not contain {:?}", f.id, f.value);
        }
        // A figure the README quotes is stated in the performance page too, beside its baseline.
        if f.files.iter().any(|x| x == "README.md") {
            assert!(f.files.iter().any(|x| x == "docs/performance.md"), "{}: not in docs/performance.md", f.id);
        }
    }
}
