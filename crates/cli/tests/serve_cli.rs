//! `visualrwkv serve` over real HTTP on the tiny fixture VisualRWKV: greedy answers equal `chat
//! --temperature 0`, streamed chunks concatenate to the plain answer, cache hits answer as
//! misses do and are counted, concurrent clients each get their own answer, every bad input is
//! a 4xx with OpenAI's error object (and the next request works), and SIGTERM exits 0.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};

use base64::Engine as _;
use common::{bin, fixture, projector_file, run, tmp_str as tmp};
use serde_json::{Value, json};

const IMAGES: [&str; 2] = ["preprocess/noise_rgb.png", "preprocess/gradient_rgb.png"];

fn model_args(proj: &str) -> Vec<String> {
    [
        "--rwkv",
        &fixture("rwkv6_tiny_a_weights.safetensors"),
        "--vision",
        &fixture("clip_tiny_weights.safetensors"),
        "--proj",
        proj,
        "--prompt",
        "first",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A running server; killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let proj = projector_file("serve-proj.safetensors");
        let mut child = bin()
            .arg("serve")
            .args(model_args(&proj))
            .args(["--port", "0"])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("the server printed its address").unwrap();
            if let Some(at) = line.find("http://") {
                break line[at..].split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Self { child, url }
    }

    fn post(&self, path: &str, body: &str) -> (u16, String) {
        match ureq::post(&format!("{}{path}", self.url)).set("Content-Type", "application/json").send_string(body) {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    fn get(&self, path: &str) -> String {
        ureq::get(&format!("{}{path}", self.url)).call().unwrap().into_string().unwrap()
    }

    /// A Prometheus counter's value.
    fn counter(&self, name: &str) -> u64 {
        let text = self.get("/metrics");
        let line =
            text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data_url(image: &str) -> String {
    let bytes = std::fs::read(fixture(image)).unwrap();
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn chat_body(question: &str, image: &str, extra: Value) -> String {
    let mut body = json!({
        "model": "visualrwkv",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(image)}},
            {"type": "text", "text": question},
        ]}],
        "max_tokens": 8,
        "temperature": 0,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

fn answer(server: &Server, question: &str, image: &str) -> Value {
    let (status, body) = server.post("/v1/chat/completions", &chat_body(question, image, json!({})));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `chat --temperature 0` on the same model, image and question.
fn chat_cli(question: &str, image: &str) -> String {
    let proj = projector_file("serve-proj.safetensors");
    let mut args: Vec<String> = vec!["chat".into()];
    args.extend(model_args(&proj));
    for a in ["--image", &fixture(image), "--question", question, "--max-tokens", "8", "--temperature", "0"] {
        args.push(a.to_string());
    }
    let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    out.strip_suffix('\n').unwrap_or(&out).to_string()
}

#[test]
fn answers_equal_chat_streams_concatenate_and_cache_hits_equal_misses() {
    let server = Server::start(&[]);
    let want = chat_cli("Describe it.", IMAGES[0]);
    let miss = answer(&server, "Describe it.", IMAGES[0]);
    assert_eq!(miss["object"], "chat.completion");
    assert_eq!(miss["choices"][0]["message"]["role"], "assistant");
    assert_eq!(miss["choices"][0]["message"]["content"], want.as_str());
    assert!(["stop", "length"].contains(&miss["choices"][0]["finish_reason"].as_str().unwrap()));
    let usage = &miss["usage"];
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(miss["x_image_cache"], "miss");

    // The same image again: the state after "User: " + image comes from the cache.
    let (hits, misses) =
        (server.counter("visualrwkv_image_cache_hits_total"), server.counter("visualrwkv_image_cache_misses_total"));
    let hit = answer(&server, "Describe it.", IMAGES[0]);
    assert_eq!(hit["x_image_cache"], "state");
    assert_eq!(hit["choices"][0]["message"]["content"], miss["choices"][0]["message"]["content"]);
    assert_eq!(server.counter("visualrwkv_image_cache_hits_total"), hits + 1);
    assert_eq!(server.counter("visualrwkv_image_cache_misses_total"), misses);
    let other_question = chat_cli("What colour?", IMAGES[0]);
    let follow_up = answer(&server, "What colour?", IMAGES[0]);
    assert_eq!(follow_up["x_image_cache"], "state");
    assert_eq!(follow_up["choices"][0]["message"]["content"], other_question.as_str());

    // Streamed: role chunk, text chunks, the finish chunk, usage, [DONE]; the text the same.
    let body = chat_body("Describe it.", IMAGES[0], json!({"stream": true, "stream_options": {"include_usage": true}}));
    let r = ureq::post(&format!("{}/v1/chat/completions", server.url)).send_string(&body).unwrap();
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let mut raw = String::new();
    r.into_reader().read_to_string(&mut raw).unwrap();
    let events: Vec<&str> = raw.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).and_then(|ch| ch["delta"]["content"].as_str()).map(str::to_string))
        .collect();
    assert_eq!(text, want);
    let finish = chunks.iter().find_map(|c| c["choices"].get(0).and_then(|ch| ch["finish_reason"].as_str()));
    assert_eq!(finish, miss["choices"][0]["finish_reason"].as_str());
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], miss["usage"]["completion_tokens"]);

    // Text completions, models, health.
    let (status, body) =
        server.post("/v1/completions", &json!({"prompt": "Once upon", "max_tokens": 4, "temperature": 0}).to_string());
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].is_string());
    let models: Value = serde_json::from_str(&server.get("/v1/models")).unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["object"], "model");
    assert!(server.get("/health").contains("ok"));
    let metrics = server.get("/metrics");
    for name in [
        "visualrwkv_requests_total",
        "visualrwkv_tokens_generated_total",
        "visualrwkv_time_to_first_token_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name}");
    }
    assert!(server.counter("visualrwkv_tokens_generated_total") > 0);
}

#[test]
fn concurrent_clients_each_get_their_own_answer() {
    let server = Server::start(&["--max-batch", "8", "--cache-mb", "0"]);
    let questions: Vec<(String, &str)> = (0..8).map(|i| (format!("Question number {i}?"), IMAGES[i % 2])).collect();
    let alone: Vec<Value> =
        questions.iter().map(|(q, img)| answer(&server, q, img)["choices"][0]["message"]["content"].clone()).collect();
    let together: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = questions
            .iter()
            .map(|(q, img)| s.spawn(|| answer(&server, q, img)["choices"][0]["message"]["content"].clone()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
}

#[test]
fn bad_inputs_get_4xx_errors_and_the_server_keeps_serving() {
    let root = tmp("serve-images");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(fixture(IMAGES[0]), format!("{root}/a.png")).unwrap();
    let server = Server::start(&[
        "--max-image-bytes",
        "4000",
        "--max-context",
        "64",
        "--max-tokens-limit",
        "50",
        "--image-root",
        &root,
    ]);
    let png = std::fs::read(fixture(IMAGES[0])).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let with_url = |url: &str| {
        chat_body(
            "What?",
            IMAGES[0],
            json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What?"}]}]}),
        )
    };
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "not valid JSON"),
        ("[1, 2]".into(), 400, "JSON object"),
        (json!({"max_tokens": 3}).to_string(), 400, "`messages` is required"),
        (json!({"messages": [{"role": "wizard", "content": "hi"}]}).to_string(), 400, "unknown role"),
        (json!({"messages": [{"content": "hi"}]}).to_string(), 400, "role"),
        (json!({"messages": [{"role": "user", "content": 5}]}).to_string(), 400, "content"),
        (json!({"messages": [{"role": "assistant", "content": "hi"}]}).to_string(), 400, "last message"),
        (with_url("data:image/png;base64,@@@notbase64@@@"), 400, "base64"),
        (with_url(&format!("data:image/png;base64,{}", b64(b"hello, not an image"))), 400, "image"),
        (with_url(&format!("data:image/png;base64,{}", b64(&png[..png.len() / 2]))), 400, "image"),
        (with_url(&format!("data:image/png;base64,{}", b64(&vec![7u8; 6000]))), 413, "over the limit"),
        (with_url("https://example.com/cat.png"), 400, "network"),
        (with_url("file:///etc/passwd"), 400, "image root"),
        (with_url("../../../../etc/passwd"), 400, "image root"),
        (
            json!({"messages": [{"role": "user", "content": "word ".repeat(80)}]}).to_string(),
            400,
            "more than the limit",
        ),
        (json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 51}).to_string(), 400, "max_tokens"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}).to_string(), 400, "temperature"),
        (json!({"messages": [{"role": "user", "content": "hi <image>"}]}).to_string(), 400, "<image>"),
        ("x".repeat(3 << 20), 413, "over the limit"),
    ];
    for (body, status, needle) in &cases {
        let (got, text) = server.post("/v1/chat/completions", body);
        assert_eq!(got, *status, "{needle}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{needle}: not JSON: {text}"));
        let e = &v["error"];
        assert!(e["message"].as_str().unwrap().contains(needle), "{needle}: {text}");
        assert!(e["type"].is_string() && e.get("param").is_some() && e.get("code").is_some(), "{text}");
    }
    assert_eq!(server.post("/v1/completions", "{}").0, 400);
    assert_eq!(server.post("/v1/nothing", "{}").0, 404);
    // A file under the root works, and so does everything after the refusals.
    let (status, body) = server.post("/v1/chat/completions", &with_url("a.png"));
    assert_eq!(status, 200, "{body}");
    let by_file: Value = serde_json::from_str(&body).unwrap();
    let by_data = answer(&server, "What?", IMAGES[0]);
    assert_eq!(by_file["choices"][0]["message"]["content"], by_data["choices"][0]["message"]["content"]);
    assert_eq!(by_data["x_image_cache"], "state", "the same pixels are one cache entry");
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_server_with_exit_code_0() {
    let mut server = Server::start(&[]);
    answer(&server, "Hi?", IMAGES[1]);
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// OpenAI's own Python client (scripts/openai-client-test.sh, a venv outside the repo) asks an
/// image question and a streamed one; its answers equal what plain HTTP gets. Where Python or
/// PyPI is missing the script exits 77 and the test says why on stderr.
#[test]
fn openai_python_client_asks_an_image_question_and_a_streamed_one() {
    let server = Server::start(&[]);
    let script = format!("{}/../../scripts/openai-client-test.sh", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .args([script.as_str(), server.url.as_str(), &fixture(IMAGES[1]), "What is in the image?"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(77) {
        eprintln!("SKIPPED openai client test: {}", stderr.trim());
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let got: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let want = answer(&server, "What is in the image?", IMAGES[1]);
    let content = &want["choices"][0]["message"]["content"];
    assert_eq!(&got["answer"], content);
    assert_eq!(&got["streamed"], content);
    assert_eq!(got["completion_tokens"], want["usage"]["completion_tokens"]);
    assert_eq!(got["finish_reason"], want["choices"][0]["finish_reason"]);
    assert!(got["chunks"].as_u64().unwrap() >= 2, "{got}");
    assert_eq!(got["models"].as_array().map(Vec::len), Some(1), "{got}");
}

/// `bench-serve` on the tiny model: the first-token round reports a miss, a rows hit and a state
/// hit as the server saw them, and the throughput round every request and its tokens.
#[test]
fn bench_serve_reports_first_token_and_throughput() {
    let proj = projector_file("bench-serve-proj.safetensors");
    let json_path = tmp("bench-serve.json");
    let mut args = model_args(&proj);
    args.iter_mut().for_each(|a| {
        if a == "first" {
            *a = "sandwich".into();
        }
    });
    let o = bin()
        .arg("bench-serve")
        .args(&args)
        .args(["--clients", "1,3", "--requests", "2", "--max-tokens", "4", "--repeats", "2"])
        .args(["--image", &fixture(IMAGES[0]), "--json", &json_path])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("| clients |") && stdout.contains("| new image | miss |"), "{stdout}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    for (key, cache) in [("new_image", "miss"), ("new_question", "rows"), ("same_question", "state")] {
        let k = &r["ttft"][key];
        assert_eq!(k["cache"], cache, "{key}: {r}");
        let runs = k["runs_s"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|v| v.as_f64().unwrap() > 0.0), "{r}");
    }
    assert!(r["ttft_speedup_state"].as_f64().unwrap() > 0.0);
    let rounds = r["throughput"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    for (t, clients) in rounds.iter().zip([1u64, 3]) {
        assert_eq!(t["clients"], clients);
        assert_eq!(t["requests"], clients * 2);
        let tokens = t["completion_tokens"].as_u64().unwrap();
        assert!(tokens >= 1 && tokens <= clients * 2 * 4, "{t}");
        assert!(t["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(t["state_hits"], clients * 2, "every request continues from the cached state: {t}");
    }
    assert_eq!(rounds[0]["speedup"], 1.0);
    assert_eq!(r["device"], "cpu");
}
