//! The HTTP side of `serve`: axum routes, OpenAI's wire format, request limits and image
//! loading. Every refusal is OpenAI's error object `{"error": {"message", "type", "param",
//! "code"}}` with a 4xx status; nothing a client sends can stop the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use visualrwkv::GenerateOptions;
use visualrwkv::serving::{Event, RequestInput, ServeRequest};
use visualrwkv_prompt::{Conversation, IMAGE_TAG, Role, Turn};
use visualrwkv_rwkv::SamplingOptions;
use visualrwkv_tokenizer::{DOUBLE_NEWLINE, END_OF_TEXT};

use super::{Metrics, ModelInfo, Submission, Update};

/// A refusal: status, message, the offending parameter and a code.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    fn bad(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), param: param.into(), code: None }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() { "server_error" } else { "invalid_request_error" };
        let body = json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}});
        (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

/// The state every handler shares.
#[derive(Clone)]
struct App {
    info: Arc<ModelInfo>,
    submit: mpsc::UnboundedSender<Submission>,
    metrics: Arc<Metrics>,
    ids: Arc<AtomicU64>,
}

/// Runs the HTTP server on `listener` until Ctrl-C, SIGTERM or a message on `stop` (sent or
/// dropped), then lets in-flight requests finish (graceful shutdown) and returns.
pub fn serve(
    listener: std::net::TcpListener,
    info: ModelInfo,
    submit: mpsc::UnboundedSender<Submission>,
    metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the HTTP runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        let app = App { info: Arc::new(info), submit, metrics, ids: Arc::default() };
        let router = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/completions", post(completions))
            .route("/v1/models", get(models))
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
            .route("/metrics", get(metrics_text))
            .fallback(|| async { ApiError::bad("no such endpoint", None).status(StatusCode::NOT_FOUND) })
            .with_state(app);
        let stopping = async move {
            tokio::select! {
                _ = stop_signal() => {}
                _ = stop => {}
            }
        };
        axum::serve(listener, router).with_graceful_shutdown(stopping).await.map_err(|e| e.to_string())
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    eprintln!("stopping: finishing the requests in flight");
}

/// A JSON response.
struct Json(Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.0.to_string()).into_response()
    }
}

async fn models(State(app): State<App>) -> Json {
    Json(json!({
        "object": "list",
        "data": [{"id": app.info.name, "object": "model", "created": app.info.created, "owned_by": "visualrwkv", "max_context": app.info.max_context}],
    }))
}

async fn metrics_text(State(app): State<App>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// Reads at most `limit` bytes of body (413 beyond) and parses it as a JSON object (400).
async fn read_json(body: Body, limit: usize) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::bad(format!("the request body is over the limit of {limit} bytes"), None)
            .status(StatusCode::PAYLOAD_TOO_LARGE)
            .code("request_too_large")
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad("the request body must be a JSON object", None)),
        Err(e) => Err(ApiError::bad(format!("the request body is not valid JSON: {e}"), None).code("invalid_json")),
    }
}

/// The body limit: the largest image in base64 plus room for the text.
fn body_limit(info: &ModelInfo) -> usize {
    info.max_image_bytes / 3 * 4 + (1 << 20)
}

fn number(body: &serde_json::Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            v.as_f64().map(Some).ok_or_else(|| ApiError::bad(format!("`{key}` must be a number"), key.to_string()))
        }
    }
}

/// The sampling options, `max_tokens`, stop strings and `stream` of a request body.
fn options(
    body: &serde_json::Map<String, Value>,
    info: &ModelInfo,
    stop_tokens: Vec<u32>,
) -> Result<(GenerateOptions, Vec<String>, bool), ApiError> {
    if let Some(n) = number(body, "n")?
        && n != 1.0
    {
        return Err(ApiError::bad("only `n` = 1 is supported", "n".to_string()));
    }
    let max_key = if body.contains_key("max_completion_tokens") { "max_completion_tokens" } else { "max_tokens" };
    let max_tokens = match number(body, max_key)? {
        None => 128.min(info.max_tokens_limit),
        Some(m) if m >= 1.0 && m.fract() == 0.0 && m <= info.max_tokens_limit as f64 => m as usize,
        Some(m) => {
            return Err(ApiError::bad(
                format!("`{max_key}` is {m}; it must be a whole number from 1 to {}", info.max_tokens_limit),
                max_key.to_string(),
            ));
        }
    };
    let temperature = number(body, "temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad(
            format!("`temperature` is {temperature}; it must be in [0, 2]"),
            "temperature".to_string(),
        ));
    }
    let top_p = number(body, "top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad(format!("`top_p` is {top_p}; it must be in (0, 1]"), "top_p".to_string()));
    }
    let penalty = |key: &str| -> Result<f32, ApiError> {
        let p = number(body, key)?.unwrap_or(0.0);
        if !(-2.0..=2.0).contains(&p) {
            return Err(ApiError::bad(format!("`{key}` is {p}; it must be in [-2, 2]"), key.to_string()));
        }
        Ok(p as f32)
    };
    let seed = match body.get("seed") {
        None | Some(Value::Null) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        }
        Some(v) => v
            .as_i64()
            .map(|s| s as u64)
            .or_else(|| v.as_u64())
            .ok_or_else(|| ApiError::bad("`seed` must be an integer", "seed".to_string()))?,
    };
    let stop = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => {
            a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()
        }
        Some(_) => return Err(ApiError::bad("`stop` must be a string or up to 4 strings", "stop".to_string())),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad("`stream` must be a boolean", "stream".to_string())),
    };
    let sampling = SamplingOptions {
        temperature: temperature as f32,
        top_p: top_p as f32,
        top_k: 0,
        presence_penalty: penalty("presence_penalty")?,
        frequency_penalty: penalty("frequency_penalty")?,
        penalty_decay: 0.996,
        seed,
    };
    Ok((GenerateOptions { sampling, max_tokens, stop_tokens, ..Default::default() }, stop, stream))
}

/// The bytes of an image URL: a `data:` URL, or a file under `--image-root`.
fn image_bytes(url: &str, info: &ModelInfo, param: &str) -> Result<Vec<u8>, ApiError> {
    let too_large = |n: usize| {
        ApiError::bad(
            format!("the image is {n} bytes, over the limit of {} bytes", info.max_image_bytes),
            param.to_string(),
        )
        .status(StatusCode::PAYLOAD_TOO_LARGE)
        .code("image_too_large")
    };
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| ApiError::bad("a data: URL needs a `,` before its data", param.to_string()))?;
        if !meta.ends_with(";base64") {
            return Err(ApiError::bad("a data: URL must be base64 (`data:image/...;base64,...`)", param.to_string()));
        }
        if data.len() / 4 * 3 > info.max_image_bytes + 3 {
            return Err(too_large(data.len() / 4 * 3));
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|e| {
            ApiError::bad(format!("the image's base64 is invalid: {e}"), param.to_string()).code("invalid_base64")
        })?;
        if bytes.len() > info.max_image_bytes {
            return Err(too_large(bytes.len()));
        }
        return Ok(bytes);
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(ApiError::bad("images are not fetched over the network: send a data: URL", param.to_string()));
    }
    let Some(root) = &info.image_root else {
        return Err(ApiError::bad(
            "file paths need the server started with --image-root; send a data: URL",
            param.to_string(),
        ));
    };
    let path = std::path::Path::new(url.strip_prefix("file://").unwrap_or(url));
    let joined = if path.is_absolute() { path.to_path_buf() } else { root.join(path) };
    let outside = || ApiError::bad(format!("{url} is not a file under the image root"), param.to_string());
    let real = joined.canonicalize().map_err(|_| outside())?;
    if !real.starts_with(root) || !real.is_file() {
        return Err(outside());
    }
    let len = std::fs::metadata(&real).map_err(|_| outside())?.len() as usize;
    if len > info.max_image_bytes {
        return Err(too_large(len));
    }
    std::fs::read(&real).map_err(|_| outside())
}

/// A message's text and image URL from its `content` (a string, or parts).
fn content(message: &Value, i: usize) -> Result<(String, Option<(String, bool)>), ApiError> {
    let param = format!("messages[{i}].content");
    match message.get("content") {
        None | Some(Value::Null) => Ok((String::new(), None)),
        Some(Value::String(s)) => Ok((s.clone(), None)),
        Some(Value::Array(parts)) => {
            let (mut texts, mut image) = (Vec::new(), None);
            for (j, part) in parts.iter().enumerate() {
                let param = format!("messages[{i}].content[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(
                        part.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| ApiError::bad("a text part needs a string `text`", param.clone()))?
                            .to_string(),
                    ),
                    Some("image_url") => {
                        let url = match part.get("image_url") {
                            Some(Value::String(u)) => u.clone(),
                            Some(v) => v
                                .get("url")
                                .and_then(Value::as_str)
                                .ok_or_else(|| ApiError::bad("an image part needs `image_url.url`", param.clone()))?
                                .to_string(),
                            None => return Err(ApiError::bad("an image part needs `image_url`", param)),
                        };
                        if image.is_some() {
                            return Err(ApiError::bad("VisualRWKV takes one image per conversation", param));
                        }
                        image = Some((url, texts.is_empty()));
                    }
                    other => {
                        return Err(ApiError::bad(
                            format!("unknown content part type {other:?} (text, image_url)"),
                            param,
                        ));
                    }
                }
            }
            Ok((texts.join("\n"), image))
        }
        Some(_) => Err(ApiError::bad("`content` must be a string or an array of parts", param)),
    }
}

/// The conversation and image of a chat request body.
async fn conversation(
    body: &serde_json::Map<String, Value>,
    info: &Arc<ModelInfo>,
) -> Result<(Conversation, Option<image::DynamicImage>), ApiError> {
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(ApiError::bad("`messages` is empty", "messages".to_string())),
        Some(_) => return Err(ApiError::bad("`messages` must be an array", "messages".to_string())),
        None => return Err(ApiError::bad("`messages` is required", "messages".to_string())),
    };
    let (mut turns, mut system, mut image_url) = (Vec::<Turn>::new(), Vec::<String>::new(), None);
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
            ApiError::bad(format!("message {i} needs a string `role`"), format!("messages[{i}].role"))
        })?;
        let (mut text, image) = content(m, i)?;
        if text.contains(IMAGE_TAG) {
            return Err(ApiError::bad(
                format!("message {i}'s text holds `{IMAGE_TAG}`: send the image as an image_url part"),
                format!("messages[{i}].content"),
            ));
        }
        let role = match role {
            "system" | "developer" => {
                system.push(text);
                continue;
            }
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::bad(
                    format!("unknown role {other:?} (system, user, assistant)"),
                    format!("messages[{i}].role"),
                ));
            }
        };
        if let Some((url, first)) = image {
            if role != Role::User {
                return Err(ApiError::bad("only user messages may hold an image", format!("messages[{i}].content")));
            }
            if image_url.is_some() {
                return Err(ApiError::bad(
                    "VisualRWKV takes one image per conversation",
                    format!("messages[{i}].content"),
                ));
            }
            image_url = Some((url, format!("messages[{i}].content")));
            text = if first { format!("{IMAGE_TAG}\n{text}") } else { format!("{text}\n{IMAGE_TAG}") };
        }
        if role == Role::User && !system.is_empty() {
            text = format!("{}\n{text}", system.join("\n"));
            system.clear();
        }
        turns.push(Turn { role, text });
    }
    if turns.last().is_none_or(|t| t.role != Role::User) {
        return Err(ApiError::bad("the last message must be a user message", "messages".to_string()));
    }
    let image = match image_url {
        None => None,
        Some((url, param)) => {
            let info = info.clone();
            let decoded = tokio::task::spawn_blocking(move || {
                let bytes = image_bytes(&url, &info, &param)?;
                info.processor.decode(&bytes, "the request's image").map_err(|e| {
                    let code = if matches!(e, visualrwkv_vision::VisionError::ImageTooLarge { .. }) {
                        "image_too_large"
                    } else {
                        "invalid_image"
                    };
                    ApiError::bad(format!("{e}"), param.clone()).code(code)
                })
            })
            .await
            .map_err(|e| {
                ApiError::bad(format!("decoding the image failed: {e}"), None).status(StatusCode::INTERNAL_SERVER_ERROR)
            })??;
            Some(decoded)
        }
    };
    Ok((Conversation { turns }, image))
}

/// The two endpoints' response formats.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Text,
}

async fn chat_completions(State(app): State<App>, body: Body) -> Response {
    let arrived = Instant::now();
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let parsed = async {
        let body = read_json(body, body_limit(&app.info)).await?;
        let (conversation, image) = conversation(&body, &app.info).await?;
        let (options, stop, stream) = options(&body, &app.info, vec![END_OF_TEXT, DOUBLE_NEWLINE])?;
        let usage =
            body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
        Ok::<_, ApiError>((
            ServeRequest { input: RequestInput::Chat { conversation, image }, options, stop },
            stream,
            usage,
        ))
    }
    .await;
    respond(app, parsed, Kind::Chat, arrived).await
}

async fn completions(State(app): State<App>, body: Body) -> Response {
    let arrived = Instant::now();
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let parsed = async {
        let body = read_json(body, 1 << 20).await?;
        let prompt = match body.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or_default().to_string(),
            Some(_) => return Err(ApiError::bad("`prompt` must be a string", "prompt".to_string())),
            None => return Err(ApiError::bad("`prompt` is required", "prompt".to_string())),
        };
        let (options, stop, stream) = options(&body, &app.info, vec![END_OF_TEXT])?;
        let usage =
            body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
        Ok((ServeRequest { input: RequestInput::Text(prompt), options, stop }, stream, usage))
    }
    .await;
    respond(app, parsed, Kind::Text, arrived).await
}

/// One chunk or response object of `kind`.
fn object(
    kind: Kind,
    id: &str,
    created: u64,
    model: &str,
    text: Option<&str>,
    finish: Option<&str>,
    chunk: bool,
) -> Value {
    match kind {
        Kind::Chat => {
            let (key, message) = if chunk {
                (
                    "delta",
                    match text {
                        Some(t) => json!({"role": "assistant", "content": t}),
                        None => json!({}),
                    },
                )
            } else {
                ("message", json!({"role": "assistant", "content": text.unwrap_or_default()}))
            };
            json!({
                "id": id,
                "object": if chunk { "chat.completion.chunk" } else { "chat.completion" },
                "created": created,
                "model": model,
                "choices": [{"index": 0, key: message, "logprobs": null, "finish_reason": finish}],
            })
        }
        Kind::Text => json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text.unwrap_or_default(), "logprobs": null, "finish_reason": finish}],
        }),
    }
}

fn usage_json(u: visualrwkv::serving::Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.prompt_tokens + u.completion_tokens})
}

/// Submits a parsed request and answers it as one JSON object or a stream of server-sent events.
async fn respond(
    app: App,
    parsed: Result<(ServeRequest, bool, bool), ApiError>,
    kind: Kind,
    arrived: Instant,
) -> Response {
    let refused = |app: &App, e: ApiError| {
        app.metrics.errors.fetch_add(1, Ordering::Relaxed);
        e.into_response()
    };
    let (request, stream, include_usage) = match parsed {
        Ok(p) => p,
        Err(e) => return refused(&app, e),
    };
    let (updates, mut rx) = mpsc::unbounded_channel();
    if app.submit.send(Submission { request, updates, arrived }).is_err() {
        return refused(&app, ApiError::bad("the server is stopping", None).status(StatusCode::SERVICE_UNAVAILABLE));
    }
    let cache = match rx.recv().await {
        Some(Update::Started(admitted)) => match admitted.cache {
            visualrwkv::serving::CacheUse::NoImage => "none",
            visualrwkv::serving::CacheUse::Miss => "miss",
            visualrwkv::serving::CacheUse::Rows => "rows",
            visualrwkv::serving::CacheUse::State => "state",
        },
        Some(Update::Failed(client, message)) => {
            let status = if client { StatusCode::BAD_REQUEST } else { StatusCode::INTERNAL_SERVER_ERROR };
            let code = message.contains("more than the limit").then_some("context_length_exceeded");
            let mut e = ApiError::bad(message, None).status(status);
            e.code = code;
            return refused(&app, e);
        }
        _ => {
            return refused(
                &app,
                ApiError::bad("the request was dropped", None).status(StatusCode::INTERNAL_SERVER_ERROR),
            );
        }
    };
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Text => "cmpl",
    };
    let id = format!("{prefix}-{}", app.ids.fetch_add(1, Ordering::Relaxed));
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let model = app.info.name.clone();
    if !stream {
        let mut text = String::new();
        while let Some(update) = rx.recv().await {
            match update {
                Update::Event(Event::Text { text: t, .. }) => text.push_str(&t),
                Update::Event(Event::Finished { reason, usage, .. }) => {
                    let mut body = object(kind, &id, created, &model, Some(&text), Some(reason.as_str()), false);
                    body["usage"] = usage_json(usage);
                    // What the image got from the image-state cache: none, miss, rows or state.
                    body["x_image_cache"] = json!(cache);
                    return Json(body).into_response();
                }
                Update::Failed(_, message) => {
                    return refused(&app, ApiError::bad(message, None).status(StatusCode::INTERNAL_SERVER_ERROR));
                }
                Update::Started(_) => {}
            }
        }
        return refused(
            &app,
            ApiError::bad("the generation was dropped", None).status(StatusCode::INTERNAL_SERVER_ERROR),
        );
    }
    // Server-sent events: a first chunk with the role (chat), text chunks, the finish chunk,
    // the usage chunk when asked for, then `[DONE]`.
    // The role chunk also says what the image got from the cache (as `x_image_cache` does on
    // a plain response), before any token.
    let first = match kind {
        Kind::Chat => {
            let mut role = object(kind, &id, created, &model, Some(""), None, true);
            role["x_image_cache"] = json!(cache);
            Some(role)
        }
        Kind::Text => None,
    };
    let events = futures_util::stream::unfold((rx, first, false), move |(mut rx, mut first, done)| {
        let (id, model) = (id.clone(), model.clone());
        async move {
            let sse = |v: &Value| Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: {v}\n\n")));
            if let Some(f) = first.take() {
                return Some((sse(&f), (rx, None, false)));
            }
            if done {
                return None;
            }
            match rx.recv().await {
                Some(Update::Event(Event::Text { text, .. })) => {
                    let chunk = object(kind, &id, created, &model, Some(&text), None, true);
                    Some((sse(&chunk), (rx, None, false)))
                }
                Some(Update::Event(Event::Finished { reason, usage, .. })) => {
                    let mut out =
                        format!("data: {}\n\n", object(kind, &id, created, &model, None, Some(reason.as_str()), true));
                    if include_usage {
                        let mut u = object(kind, &id, created, &model, None, None, true);
                        u["choices"] = json!([]);
                        u["usage"] = usage_json(usage);
                        out.push_str(&format!("data: {u}\n\n"));
                    }
                    out.push_str("data: [DONE]\n\n");
                    Some((Ok(Bytes::from(out)), (rx, None, true)))
                }
                Some(Update::Failed(_, message)) => {
                    let e = json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}});
                    Some((Ok(Bytes::from(format!("data: {e}\n\ndata: [DONE]\n\n"))), (rx, None, true)))
                }
                Some(Update::Started(_)) => Some((Ok(Bytes::new()), (rx, None, false))),
                None => None,
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
