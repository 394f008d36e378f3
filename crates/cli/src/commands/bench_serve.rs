//! `visualrwkv bench-serve`: starts `serve` in-process on a free port and measures it over real
//! HTTP, as a client would see it (docs/serving.md, docs/performance.md).
//!
//! Round 1, time to first token (streamed, one token): for each of `--repeats` fresh images, a
//! new image (the tower and the whole prefill run), the same image with a new question (the
//! image rows come from the cache) and the same image and question again (the state after the
//! image comes from the cache). The cache kind each request got is read from the server's
//! `x_image_cache`, so a row says what it measured.
//!
//! Round 2, throughput: for each count in `--clients`, that many clients each send `--requests`
//! streamed chat requests of `--max-tokens` tokens back to back; aggregate tokens/s and
//! requests/s over the wall time, the speedup over the first count, mean time to first token
//! and mean latency.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use base64::Engine as _;
use serde_json::{Value, json};
use visualrwkv_rwkv::RwkvBackend;

use super::serve;
use crate::Res;
use crate::device::{DeviceArgs, DeviceSpec, Job};

/// Which questions the throughput round's requests ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Questions {
    /// Every request the same image and question: each continues from the cached state.
    Same,
    /// Every request a question of its own on the same image: the text around the image is
    /// prefilled per request (the tower is skipped).
    Distinct,
}

/// Flags of `bench-serve`: those of `serve` (which model, weights, batch, cache; the port is
/// always a free one) and the load.
#[derive(clap::Args)]
#[group(id = "bench_serve_args")] // `serve::Args`, flattened in, holds the group named `Args`
pub struct Args {
    #[command(flatten)]
    serve: serve::Args,
    /// Concurrent client counts of the throughput round, comma-separated.
    #[arg(long, default_value = "1,4,8", value_parser = parse_clients)]
    clients: ClientCounts,
    /// Requests each client sends in the throughput round.
    #[arg(long, default_value_t = 3)]
    requests: usize,
    /// Tokens each throughput request asks for.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature of the requests (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// First-token measurements per cache kind.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// The image asked about (default: a generated 336×336 picture); each new-image request
    /// changes one pixel so that the cache cannot know it.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Questions of the throughput round.
    #[arg(long, value_enum, default_value_t = Questions::Same)]
    questions: Questions,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Client counts of `--clients` (each ≥ 1, at least one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCounts(Vec<usize>);

/// Parses `--clients`: positive integers separated by commas.
fn parse_clients(s: &str) -> Result<ClientCounts, String> {
    let counts = s
        .split(',')
        .map(|p| match p.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("--clients {s:?}: {p:?} is not a positive number of clients")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ClientCounts(counts))
}

/// What one streamed request saw.
#[derive(Clone, Debug)]
struct Reply {
    /// Seconds from sending to the first token's chunk (or the finish chunk, if no text came).
    first_s: f64,
    /// Seconds from sending to `[DONE]`.
    total_s: f64,
    completion_tokens: u64,
    /// `x_image_cache` of the role chunk: none, miss, rows or state.
    cache: String,
}

/// The load to drive, moved to the client thread.
struct Plan {
    clients: Vec<usize>,
    requests: usize,
    max_tokens: usize,
    temperature: f32,
    repeats: usize,
    image: image::DynamicImage,
    questions: Questions,
}

impl Job for Args {
    type Output = ();

    fn device_args(&self) -> &DeviceArgs {
        self.serve.device()
    }

    fn run<B: RwkvBackend>(self, dev: B::Device, spec: &DeviceSpec) -> Res<()> {
        if self.repeats == 0 || self.requests == 0 || self.max_tokens == 0 {
            return Err("--repeats, --requests and --max-tokens must be at least 1".into());
        }
        let image = match &self.image {
            Some(path) => image::open(path).map_err(|e| format!("--image {}: {e}", path.display()))?,
            None => generated_image(),
        };
        let plan = Plan {
            clients: self.clients.0.clone(),
            requests: self.requests,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            repeats: self.repeats,
            image,
            questions: self.questions,
        };
        let weights = self.serve.weights_name();
        let driver: serve::Driver<Result<Value, String>> = Box::new(move |address| drive(address, &plan));
        let mut report = self
            .serve
            .on_free_port()
            .serve_with::<B, _>(dev, spec, Some(driver))?
            .ok_or("the benchmark's client did not run")??;
        report["device"] = json!(spec.to_string());
        report["weights"] = json!(weights);
        report["threads"] = json!(std::thread::available_parallelism().map_or(1, |n| n.get()));
        print!("{}", markdown(&report));
        if let Some(path) = &self.json {
            let text = serde_json::to_string_pretty(&report)?;
            visualrwkv_checkpoint::write_atomic(path, format!("{text}\n").as_bytes())?;
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }
}

/// A 336×336 RGB picture with structure at every scale (gradients and a checkerboard).
fn generated_image() -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(336, 336, |x, y| {
        let check = if (x / 24 + y / 24) % 2 == 0 { 60 } else { 0 };
        image::Rgb([(x * 255 / 335) as u8, (y * 255 / 335) as u8, (((x + y) / 3) as u8).wrapping_add(check)])
    }))
}

/// Image `variant` as a PNG data URL: pixel (0, 0) changed by the variant, so that every
/// variant hashes differently.
fn data_url(image: &image::DynamicImage, variant: u32) -> Result<String, String> {
    let mut rgb = image.to_rgb8();
    let p = rgb.get_pixel_mut(0, 0);
    p.0 = [(variant % 256) as u8, (variant / 256 % 256) as u8, (variant / 65536 % 256) as u8];
    let mut png = Vec::new();
    rgb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).map_err(|e| e.to_string())?;
    Ok(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png)))
}

/// Question number `k` (distinct texts for distinct `k`).
fn question(k: usize) -> String {
    format!("Question {k}: what is in this picture, and what colour is its upper left corner?")
}

/// Sends one streamed chat request and reads it to `[DONE]`.
fn ask(base: &str, image: &str, question: &str, max_tokens: usize, temperature: f32) -> Result<Reply, String> {
    let body = json!({
        "model": "visualrwkv",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image}},
            {"type": "text", "text": question},
        ]}],
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let sent = Instant::now();
    let response = match ureq::post(&format!("{base}/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
    {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(format!("the server answered {code}: {}", r.into_string().unwrap_or_default()));
        }
        Err(e) => return Err(format!("request failed: {e}")),
    };
    let (mut first_s, mut cache, mut completion_tokens) = (None, String::new(), 0);
    for line in BufReader::new(response.into_reader()).lines() {
        let line = line.map_err(|e| format!("reading the stream: {e}"))?;
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            let total_s = sent.elapsed().as_secs_f64();
            return Ok(Reply { first_s: first_s.unwrap_or(total_s), total_s, completion_tokens, cache });
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| format!("a chunk that is not JSON ({e}): {data}"))?;
        if let Some(e) = chunk.get("error") {
            return Err(format!("the stream failed: {e}"));
        }
        if let Some(c) = chunk.get("x_image_cache").and_then(Value::as_str) {
            cache = c.to_string();
        }
        if let Some(n) = chunk.pointer("/usage/completion_tokens").and_then(Value::as_u64) {
            completion_tokens = n;
        }
        let choice = chunk.pointer("/choices/0");
        let text = choice.and_then(|c| c.pointer("/delta/content")).and_then(Value::as_str).unwrap_or("");
        let finished = choice.is_some_and(|c| !c.get("finish_reason").is_none_or(Value::is_null));
        let is_role = chunk.get("x_image_cache").is_some();
        if first_s.is_none() && !is_role && (!text.is_empty() || finished) {
            first_s = Some(sent.elapsed().as_secs_f64());
        }
    }
    Err("the stream ended without [DONE]".into())
}

/// The median of `v` (not empty).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 { s[m] } else { (s[m - 1] + s[m]) / 2.0 }
}

/// Both rounds against the server at `address`, as the report JSON.
fn drive(address: SocketAddr, plan: &Plan) -> Result<Value, String> {
    let base = format!("http://{address}");
    // Round 1: time to first token per cache kind.
    let (mut new_image, mut new_question, mut same_question) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..plan.repeats {
        let image = data_url(&plan.image, 1000 + r as u32)?;
        let q = question(1000 + r);
        new_image.push(ask(&base, &image, &question(0), 1, plan.temperature)?);
        new_question.push(ask(&base, &image, &q, 1, plan.temperature)?);
        same_question.push(ask(&base, &image, &q, 1, plan.temperature)?);
    }
    let kind = |replies: &[Reply]| {
        let runs: Vec<f64> = replies.iter().map(|r| r.first_s).collect();
        let mut caches: Vec<&str> = replies.iter().map(|r| r.cache.as_str()).collect();
        caches.dedup();
        json!({"median_s": median(&runs), "runs_s": runs, "cache": caches.join(",")})
    };
    let ttft = json!({
        "new_image": kind(&new_image),
        "new_question": kind(&new_question),
        "same_question": kind(&same_question),
    });
    let miss = ttft["new_image"]["median_s"].as_f64().unwrap_or(f64::NAN);
    let speedup = |key: &str| miss / ttft[key]["median_s"].as_f64().unwrap_or(f64::NAN);

    // Round 2: throughput per client count, after one request that puts the image (and, for
    // `same`, the question's state) in the cache.
    let image = data_url(&plan.image, 0)?;
    ask(&base, &image, &question(0), 1, plan.temperature)?;
    let mut throughput = Vec::new();
    let mut asked = 1usize;
    for &clients in &plan.clients {
        let started = Instant::now();
        let replies: Vec<Result<Vec<Reply>, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let (base, image) = (&base, &image);
                    let first = asked + c * plan.requests;
                    scope.spawn(move || {
                        (0..plan.requests)
                            .map(|k| {
                                let q = match plan.questions {
                                    Questions::Same => question(0),
                                    Questions::Distinct => question(first + k),
                                };
                                ask(base, image, &q, plan.max_tokens, plan.temperature)
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a client thread panicked".into()))).collect()
        });
        let seconds = started.elapsed().as_secs_f64();
        asked += clients * plan.requests;
        let replies: Vec<Reply> = replies.into_iter().collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect();
        let tokens: u64 = replies.iter().map(|r| r.completion_tokens).sum();
        let n = replies.len() as f64;
        throughput.push(json!({
            "clients": clients,
            "requests": replies.len(),
            "completion_tokens": tokens,
            "seconds": seconds,
            "requests_per_s": n / seconds,
            "tokens_per_s": tokens as f64 / seconds,
            "ttft_mean_s": replies.iter().map(|r| r.first_s).sum::<f64>() / n,
            "latency_mean_s": replies.iter().map(|r| r.total_s).sum::<f64>() / n,
            "state_hits": replies.iter().filter(|r| r.cache == "state").count(),
        }));
    }
    let base_rate = throughput.first().and_then(|t| t["tokens_per_s"].as_f64()).unwrap_or(f64::NAN);
    for t in &mut throughput {
        t["speedup"] = json!(t["tokens_per_s"].as_f64().unwrap_or(f64::NAN) / base_rate);
    }
    Ok(json!({
        "ttft": ttft,
        "ttft_speedup_state": speedup("same_question"),
        "ttft_speedup_rows": speedup("new_question"),
        "max_tokens": plan.max_tokens,
        "requests_per_client": plan.requests,
        "questions": format!("{:?}", plan.questions).to_lowercase(),
        "throughput": throughput,
    }))
}

/// The report as Markdown tables.
fn markdown(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut out = String::from("| first token | cache | median s | runs s |\n|---|---|---|---|\n");
    for (key, label) in [
        ("new_image", "new image"),
        ("new_question", "same image, new question"),
        ("same_question", "same image and question"),
    ] {
        let k = &r["ttft"][key];
        let runs: Vec<String> = k["runs_s"].as_array().into_iter().flatten().map(|v| format!("{:.3}", f(v))).collect();
        out.push_str(&format!(
            "| {label} | {} | {:.3} | {} |\n",
            k["cache"].as_str().unwrap_or(""),
            f(&k["median_s"]),
            runs.join(", ")
        ));
    }
    out.push_str(&format!(
        "\nstate hit {:.1}x faster than a miss, rows hit {:.1}x\n\n",
        f(&r["ttft_speedup_state"]),
        f(&r["ttft_speedup_rows"])
    ));
    out.push_str(
        "| clients | requests | tokens | s | req/s | tok/s | speedup | mean first token s | mean latency s |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for t in r["throughput"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.2}x | {:.3} | {:.3} |\n",
            t["clients"],
            t["requests"],
            t["completion_tokens"],
            f(&t["seconds"]),
            f(&t["requests_per_s"]),
            f(&t["tokens_per_s"]),
            f(&t["speedup"]),
            f(&t["ttft_mean_s"]),
            f(&t["latency_mean_s"]),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_counts_parse_and_refuse_bad_values() {
        assert_eq!(parse_clients("1,4, 8"), Ok(ClientCounts(vec![1, 4, 8])));
        assert!(parse_clients("1,0").unwrap_err().contains("\"0\""));
        assert!(parse_clients("two").is_err());
        assert!(parse_clients("").is_err());
    }

    #[test]
    fn image_variants_differ_and_decode() {
        let image = generated_image();
        let (a, b) = (data_url(&image, 1).unwrap(), data_url(&image, 2).unwrap());
        assert_ne!(a, b);
        let png = base64::engine::general_purpose::STANDARD.decode(a.split_once(',').unwrap().1).unwrap();
        let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(decoded.dimensions(), (336, 336));
        assert_eq!(decoded.get_pixel(0, 0).0, [1, 0, 0]);
    }

    #[test]
    fn median_of_odd_and_even_lengths() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
