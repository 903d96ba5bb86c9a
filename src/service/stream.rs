//! Streaming answers: the upstream's Server-Sent Events are read by a task of
//! their own and forwarded as each network read arrives, with `model` renamed,
//! usage handled as SPEC §5 says, and the call settled however the stream ends
//! (finished, upstream error, client gone, shutdown).

use super::proxy::{api_error, generated_text, shutting_down, Endpoint};
use crate::config::OnDisconnect;
use crate::error::ApiError;
use crate::metering::call::{CallMeter, Outcome, Usage};
use crate::state::AppState;
use crate::telemetry;
use crate::upstream::errors;
use crate::upstream::json_edit;
use crate::upstream::routing::Route;
use crate::upstream::sse::{Event, SseReader};
use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::{json, Value};

fn sse_error(out: &mut BytesMut, e: &ApiError) {
    out.put_slice(b"data: ");
    let _ = serde_json::to_writer((&mut *out).writer(), &e.body());
    out.put_slice(b"\n\n");
}

/// State of one stream being pumped.
struct Pump {
    client_model: String,
    wants_usage: bool,
    usage: Option<Usage>,
    usage_sent: bool,
    saw_done: bool,
    saw_finish: bool,
    failed: Option<ApiError>,
    /// The client's model name as a JSON string, for renaming in place.
    client_model_json: String,
    /// The upstream's completion id, creation time and object (JSON texts), for
    /// a synthesised usage chunk.
    id: Option<String>,
    created: Option<String>,
    object: Option<String>,
}

/// The characters of generated text in one choice of a chunk (`delta.content`,
/// `delta.reasoning`, `text`, tool-call arguments), counted in the JSON text,
/// and whether it carries a `finish_reason`. `None` if the choice is not an object.
fn choice_text(c: &str) -> Option<(usize, bool)> {
    let fields = json_edit::fields(c)?;
    let mut n = 0;
    let mut finished = false;
    let chars = |f: &json_edit::Field| json_edit::string_chars(json_edit::value(c, f)).unwrap_or(0);
    for (k, f) in &fields {
        match *k {
            "text" => n += chars(f),
            "finish_reason" => finished = json_edit::value(c, f) != "null",
            "delta" => {
                let d = json_edit::value(c, f);
                let Some(df) = json_edit::fields(d) else {
                    continue;
                };
                for (k, f) in &df {
                    match *k {
                        "content" | "reasoning" => {
                            n += json_edit::string_chars(json_edit::value(d, f)).unwrap_or(0)
                        }
                        "tool_calls" => n += tool_call_chars(json_edit::value(d, f)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((n, finished))
}

fn tool_call_chars(calls: &str) -> usize {
    let Some(items) = json_edit::elements(calls) else {
        return 0;
    };
    let mut n = 0;
    for (s, e) in items {
        let call = &calls[s..e];
        let Some(func) = json_edit::fields(call)
            .and_then(|f| f.into_iter().find(|(k, _)| *k == "function"))
            .map(|(_, f)| json_edit::value(call, &f))
        else {
            continue;
        };
        if let Some((_, a)) =
            json_edit::fields(func).and_then(|f| f.into_iter().find(|(k, _)| *k == "arguments"))
        {
            n += json_edit::string_chars(json_edit::value(func, &a)).unwrap_or(0);
        }
    }
    n
}

impl Pump {
    /// Rewrites the events read so far into bytes for the client.
    fn process(
        &mut self,
        events: &mut Vec<Event>,
        meter: &mut CallMeter,
        prov_name: &str,
        secret: &str,
    ) -> BytesMut {
        let mut out = BytesMut::new();
        for ev in events.drain(..) {
            if self.failed.is_some() || self.saw_done {
                break;
            }
            match ev {
                Event::Comment(c) => {
                    out.put_slice(b":");
                    out.put_slice(c.as_bytes());
                    out.put_slice(b"\n\n");
                }
                Event::Data(d) if d.trim() == "[DONE]" => self.saw_done = true,
                Event::Data(d) => {
                    if self.fast_chunk(&d, meter, &mut out) {
                        continue;
                    }
                    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(&d) else {
                        out.put_slice(b"data: ");
                        out.put_slice(d.as_bytes());
                        out.put_slice(b"\n\n");
                        continue;
                    };
                    if obj.contains_key("error") {
                        if let Some(n) =
                            errors::from_json_error(prov_name, &Value::Object(obj), secret)
                        {
                            let e = api_error(n);
                            sse_error(&mut out, &e);
                            self.failed = Some(e);
                        }
                        break;
                    }
                    let chunk_usage = obj.get("usage").and_then(Usage::from_json);
                    if chunk_usage.is_some() {
                        self.usage = chunk_usage;
                    }
                    let mut empty_choices = false;
                    if let Some(Value::Array(choices)) = obj.get("choices") {
                        empty_choices = choices.is_empty();
                        for c in choices {
                            generated_text(c, |s| {
                                if !s.is_empty() {
                                    meter.first_token();
                                    meter.add_generated(s);
                                }
                            });
                            if c.get("finish_reason").is_some_and(|f| !f.is_null()) {
                                self.saw_finish = true;
                            }
                        }
                    }
                    if self.id.is_none() {
                        self.id = obj.get("id").map(Value::to_string);
                        self.created = obj.get("created").map(Value::to_string);
                        self.object = obj.get("object").map(Value::to_string);
                    }
                    if obj.contains_key("model") {
                        obj.insert("model".into(), Value::String(self.client_model.clone()));
                    }
                    if self.wants_usage {
                        if chunk_usage.is_some() && !meter.is_finished() {
                            let info = meter.finish(Outcome::Ok, 200, chunk_usage);
                            obj.insert(
                                "_usage_info".into(),
                                serde_json::to_value(info).unwrap_or(Value::Null),
                            );
                            self.usage_sent = true;
                        }
                    } else {
                        obj.remove("usage");
                        if empty_choices {
                            continue;
                        }
                    }
                    out.put_slice(b"data: ");
                    let _ = serde_json::to_writer((&mut out).writer(), &obj);
                    out.put_slice(b"\n\n");
                }
            }
        }
        out
    }

    /// An ordinary chunk (no usage, no error): counts its text and forwards it
    /// with `model` renamed and `usage: null` dropped, editing its text as it
    /// is copied out. One structural pass over its fields, no tree, no
    /// allocation but the field list. `false` when the chunk needs the general path.
    fn fast_chunk(&mut self, d: &str, meter: &mut CallMeter, out: &mut BytesMut) -> bool {
        let Some(fields) = json_edit::fields(d) else {
            return false;
        };
        let field = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, f)| *f);
        let present =
            |f: Option<json_edit::Field>| f.is_some_and(|f| json_edit::value(d, &f) != "null");
        if present(field("error")) {
            return false;
        }
        let usage = field("usage");
        if present(usage) {
            return false;
        }
        let mut empty = false;
        if let Some(f) = field("choices") {
            let arr = json_edit::value(d, &f);
            let Some(items) = json_edit::elements(arr) else {
                return false;
            };
            empty = items.is_empty();
            for (s, e) in items {
                let Some((n, finished)) = choice_text(&arr[s..e]) else {
                    return false;
                };
                if n > 0 {
                    meter.first_token();
                    meter.add_generated_chars(n);
                }
                self.saw_finish |= finished;
            }
        }
        if self.id.is_none() {
            let raw = |k: &str| field(k).map(|f| json_edit::value(d, &f).to_owned());
            self.id = raw("id");
            self.created = raw("created");
            self.object = raw("object");
        }
        if empty && !self.wants_usage {
            return true;
        }
        // Edits in text order: the new model name, `usage: null` taken out.
        let mut edits: [(usize, usize, &str); 2] = [(usize::MAX, usize::MAX, ""); 2];
        if let Some(f) = field("model") {
            if json_edit::value(d, &f) != self.client_model_json {
                edits[0] = (f.value_start, f.value_end, self.client_model_json.as_str());
            }
        }
        if let (Some(f), false) = (usage, self.wants_usage) {
            let (s, e) = json_edit::removal_range(d, &f);
            edits[1] = (s, e, "");
        }
        edits.sort_unstable_by_key(|e| e.0);
        out.reserve(d.len() + self.client_model_json.len() + 8);
        out.put_slice(b"data: ");
        let mut at = 0;
        for (s, e, with) in edits {
            if s == usize::MAX || s < at {
                continue;
            }
            out.put_slice(&d.as_bytes()[at..s]);
            out.put_slice(with.as_bytes());
            at = e;
        }
        out.put_slice(&d.as_bytes()[at..]);
        out.put_slice(b"\n\n");
        true
    }

    /// The usage chunk a client asked for when the upstream sent none.
    fn synthesised_usage(&self, meter: &mut CallMeter) -> BytesMut {
        let info = meter.finish(Outcome::Ok, 200, self.usage);
        let raw = |v: &Option<String>| {
            v.as_deref()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
        };
        let chunk = json!({
            "id": raw(&self.id).unwrap_or(Value::Null),
            "object": raw(&self.object).unwrap_or_else(|| json!("chat.completion.chunk")),
            "created": raw(&self.created).unwrap_or(json!(0)),
            "model": self.client_model,
            "choices": [],
            "usage": {
                "prompt_tokens": info.prompt_tokens,
                "completion_tokens": info.completion_tokens,
                "total_tokens": info.tokens_used,
            },
            "_usage_info": info,
        });
        let mut out = BytesMut::new();
        out.put_slice(b"data: ");
        let _ = serde_json::to_writer((&mut out).writer(), &chunk);
        out.put_slice(b"\n\n");
        out
    }
}

/// A call whose upstream answered with a stream, ready to be pumped.
pub(super) struct StreamCall {
    pub st: AppState,
    pub meter: CallMeter,
    pub resp: crate::upstream::client::UpResponse,
    pub target: Route,
    pub client_model: String,
    pub wants_usage: bool,
    pub ep: Endpoint,
    pub started: std::time::Instant,
}

/// Starts the pump and answers with its output as the response body.
pub(super) fn stream_response(call: StreamCall) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(pump(call, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let mut r = Response::new(Body::from_stream(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Reads the upstream stream and forwards each network read's events as soon
/// as they arrive; settles the call however the stream ends.
async fn pump(call: StreamCall, tx: tokio::sync::mpsc::Sender<Bytes>) {
    let StreamCall {
        st,
        mut meter,
        resp,
        target,
        client_model,
        wants_usage,
        ep,
        started,
    } = call;
    let prov = target.provider.clone();
    let secret = prov.api_key.expose().to_owned();
    let drain = st.config.metering.on_disconnect == OnDisconnect::Drain;
    let mut upstream = resp.bytes_stream();
    let mut reader = SseReader::new();
    let mut events = Vec::new();
    let mut p = Pump {
        client_model_json: serde_json::to_string(&client_model).unwrap_or_else(|_| "\"\"".into()),
        client_model,
        wants_usage,
        usage: None,
        usage_sent: false,
        saw_done: false,
        saw_finish: false,
        failed: None,
        id: None,
        created: None,
        object: None,
    };
    let mut client_gone = false;
    // Set when shutdown ends the call: charged like a cancel, never drained.
    let mut cut = false;
    let mut first_byte = true;
    loop {
        let next = tokio::select! {
            n = upstream.next() => n,
            _ = tx.closed(), if !client_gone => {
                client_gone = true;
                if drain { continue } else { break }
            }
            _ = st.metering.calls.stopped() => {
                cut = true;
                break;
            }
        };
        let ended = match next {
            Some(Ok(chunk)) => {
                reader.push(&chunk, &mut events);
                false
            }
            Some(Err(e)) => {
                p.failed = Some(if e.is_timeout() {
                    ApiError::upstream_timeout(format!("{}: the stream timed out.", prov.name))
                } else {
                    ApiError::upstream(format!("{}: the stream broke off: {e}", prov.name))
                });
                true
            }
            None => {
                reader.finish(&mut events);
                true
            }
        };
        let failed_before = p.failed.is_some();
        let mut out = p.process(&mut events, &mut meter, &prov.name, &secret);
        if failed_before && !client_gone {
            sse_error(
                &mut out,
                p.failed
                    .as_ref()
                    .unwrap_or(&ApiError::upstream("stream failed")),
            );
        }
        if !out.is_empty() && !client_gone {
            if first_byte {
                first_byte = false;
                telemetry::record_ttft(
                    &prov.id,
                    &meter.info.metric_model,
                    ep.name(),
                    started.elapsed().as_secs_f64(),
                );
            }
            if tx.send(out.freeze()).await.is_err() {
                client_gone = true;
                if !drain {
                    break;
                }
            }
        }
        if ended || p.failed.is_some() || p.saw_done {
            break;
        }
    }
    // Cancel the upstream before settling: dropping the body closes the connection.
    drop(upstream);
    let status;
    if let Some(e) = &p.failed {
        status = e.status.as_u16();
        meter.finish(Outcome::UpstreamError, status, None);
    } else if client_gone || cut {
        status = 499;
        // Usage the upstream already reported is exact (always so after a
        // drain); without it the charge is the prompt and the text so far.
        if !meter.is_finished() {
            let code = if p.usage.is_some() { 200 } else { 499 };
            meter.finish(Outcome::ClientCancelled, code, p.usage);
        }
        if cut && !client_gone {
            let mut out = BytesMut::new();
            sse_error(&mut out, &shutting_down());
            let _ = tx.try_send(out.freeze());
        }
    } else if !p.saw_done && !p.saw_finish && p.usage.is_none() {
        let e = ApiError::upstream(format!(
            "{}: the provider closed the stream before it finished.",
            prov.name
        ));
        status = 502;
        let mut out = BytesMut::new();
        sse_error(&mut out, &e);
        let _ = tx.send(out.freeze()).await;
        meter.finish(Outcome::UpstreamError, 502, None);
        st.health.record(&prov.id, false);
    } else {
        status = 200;
        let mut out = BytesMut::new();
        if p.wants_usage && !p.usage_sent {
            out = p.synthesised_usage(&mut meter);
        } else if !meter.is_finished() {
            meter.finish(Outcome::Ok, 200, p.usage);
        }
        out.put_slice(b"data: [DONE]\n\n");
        let _ = tx.send(out.freeze()).await;
    }
    telemetry::record_request(
        &prov.id,
        &meter.info.metric_model,
        ep.name(),
        status,
        started.elapsed().as_secs_f64(),
    );
}
