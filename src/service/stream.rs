//! Streaming answers: the upstream's Server-Sent Events are read by a task of
//! their own and forwarded as each network read arrives, with `model` renamed,
//! usage handled as SPEC §5 says, and the call settled however the stream ends
//! (finished, upstream error, client gone, shutdown).

use super::answer::{Answer, Wanted};
use super::proxy::{api_error, shutting_down, Endpoint};
use crate::config::OnDisconnect;
use crate::dialect;
use crate::error::ApiError;
use crate::metering::call::{CallMeter, Outcome, Usage};
use crate::state::AppState;
use crate::telemetry;
use crate::upstream::errors;
use crate::upstream::routing::Route;
use crate::upstream::sse::{Event, SseReader};
use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

fn sse_error(out: &mut Vec<u8>, e: &ApiError) {
    out.extend_from_slice(b"data: ");
    let _ = serde_json::to_writer(&mut *out, &e.body());
    out.extend_from_slice(b"\n\n");
}

/// How the events of a stream reach the client.
enum Relay {
    /// An OpenAI-compatible stream to an OpenAI client: chunk by chunk,
    /// edited in place.
    Chat,
    /// An Anthropic stream to an Anthropic client: event by event, as it came,
    /// with the model renamed and `_usage_info` in `message_delta`'s usage.
    Anthropic {
        /// `message_start`'s usage, merged into `message_delta`'s.
        input: Option<Value>,
    },
    /// Another dialect: each event read into deltas and written in the client's.
    Translate {
        dec: Box<dyn dialect::Decode>,
        enc: Box<dyn dialect::Encode>,
        deltas: Vec<dialect::Delta>,
    },
}

/// The `type` of an Anthropic event (its `event:` name).
#[derive(serde::Deserialize)]
struct Typed<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// State of one stream being pumped.
struct Pump {
    relay: Relay,
    client_model: String,
    /// The client's model name as a JSON string, written into each chunk.
    client_model_json: String,
    wants_usage: bool,
    usage: Option<Usage>,
    usage_sent: bool,
    saw_done: bool,
    saw_finish: bool,
    failed: Option<ApiError>,
    /// The upstream's completion id, creation time and object (JSON texts), for
    /// a synthesised usage chunk.
    id: Option<String>,
    created: Option<String>,
    object: Option<String>,
}

impl Pump {
    /// Rewrites the events read so far into bytes for the client.
    fn process(
        &mut self,
        events: &mut Vec<Event>,
        meter: &mut CallMeter,
        prov_name: &str,
        secret: &str,
    ) -> Vec<u8> {
        // Room for the events as they came, the framing and a usage object:
        // the output is written without growing in the common case.
        let size: usize = events
            .iter()
            .map(|e| match e {
                Event::Data(d) | Event::Comment(d) => d.len() + 16,
            })
            .sum();
        let mut out = Vec::with_capacity(size + 320);
        for ev in events.drain(..) {
            if self.failed.is_some() || self.saw_done {
                break;
            }
            match ev {
                Event::Comment(c) => {
                    out.extend_from_slice(b":");
                    out.extend_from_slice(c.as_bytes());
                    out.extend_from_slice(b"\n\n");
                }
                Event::Data(d) if d.trim() == "[DONE]" => self.saw_done = true,
                Event::Data(d) => match self.relay {
                    Relay::Chat => self.chunk(&d, meter, prov_name, secret, &mut out),
                    Relay::Anthropic { .. } => {
                        self.anthropic(&d, meter, prov_name, secret, &mut out)
                    }
                    Relay::Translate { .. } => {
                        self.translate(&d, meter, prov_name, secret, &mut out)
                    }
                },
            }
        }
        out
    }

    /// An error event in the client's dialect.
    fn write_error(&mut self, e: &ApiError, out: &mut Vec<u8>) {
        match &mut self.relay {
            Relay::Chat => sse_error(out, e),
            Relay::Anthropic { .. } => dialect::anthropic::sse_error(e, out),
            Relay::Translate { enc, .. } => enc.error(e, out),
        }
    }

    fn upstream_error(&mut self, v: &Value, prov_name: &str, secret: &str, out: &mut Vec<u8>) {
        let e = match errors::from_json_error(prov_name, v, secret) {
            Some(n) => api_error(n),
            None => ApiError::upstream(format!("{prov_name}: the provider reported an error.")),
        };
        self.write_error(&e, out);
        self.failed = Some(e);
    }

    /// One event of an Anthropic stream for an Anthropic client.
    fn anthropic(
        &mut self,
        d: &str,
        meter: &mut CallMeter,
        prov_name: &str,
        secret: &str,
        out: &mut Vec<u8>,
    ) {
        let kind = serde_json::from_str::<Typed>(d).ok().and_then(|t| t.kind);
        let Some(kind) = kind else {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(d.as_bytes());
            out.extend_from_slice(b"\n\n");
            return;
        };
        let edited = match kind.as_ref() {
            "error" => {
                let v = serde_json::from_str::<Value>(d).unwrap_or(Value::Null);
                self.upstream_error(&v, prov_name, secret, out);
                return;
            }
            "message_start" => serde_json::from_str::<Value>(d).ok().map(|mut v| {
                if let Some(m) = v.get_mut("message").and_then(Value::as_object_mut) {
                    // Its usage is the input and the output so far: kept to be
                    // merged with `message_delta`'s, never charged alone (a
                    // client leaving before that is charged an estimate).
                    if let Some(u) = m.get("usage") {
                        if let Relay::Anthropic { input } = &mut self.relay {
                            *input = Some(u.clone());
                        }
                    }
                    m.insert("model".into(), Value::String(self.client_model.clone()));
                }
                v
            }),
            "content_block_delta" => {
                if let Ok(v) = serde_json::from_str::<Value>(d) {
                    let delta = &v["delta"];
                    let n = delta["text"]
                        .as_str()
                        .or(delta["partial_json"].as_str())
                        .or(delta["thinking"].as_str());
                    if let Some(t) = n {
                        meter.first_token();
                        meter.add_generated_chars(t.chars().count());
                    }
                }
                None
            }
            "message_delta" => serde_json::from_str::<Value>(d).ok().map(|mut v| {
                self.saw_finish |= v["delta"]["stop_reason"].is_string();
                if let Some(u) = v.get_mut("usage").and_then(Value::as_object_mut) {
                    let mut merged = match &self.relay {
                        Relay::Anthropic { input: Some(i) } => i.clone(),
                        _ => serde_json::json!({}),
                    };
                    if let Some(m) = merged.as_object_mut() {
                        for (k, x) in u.iter() {
                            m.insert(k.clone(), x.clone());
                        }
                    }
                    self.usage = dialect::anthropic::usage_of(&merged).or(self.usage);
                    if !meter.is_finished() {
                        let info = meter.finish(Outcome::Ok, 200, self.usage);
                        self.usage_sent = true;
                        u.insert(
                            "_usage_info".into(),
                            serde_json::to_value(&info).unwrap_or(Value::Null),
                        );
                    }
                }
                v
            }),
            "message_stop" => {
                self.saw_done = true;
                None
            }
            _ => None,
        };
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        match edited {
            Some(v) => {
                let _ = serde_json::to_writer(&mut *out, &v);
            }
            None => out.extend_from_slice(d.as_bytes()),
        }
        out.extend_from_slice(b"\n\n");
    }

    /// One event of a provider of another dialect: read into deltas, each
    /// written at once in the client's dialect.
    fn translate(
        &mut self,
        d: &str,
        meter: &mut CallMeter,
        prov_name: &str,
        secret: &str,
        out: &mut Vec<u8>,
    ) {
        let Relay::Translate { dec, enc, deltas } = &mut self.relay else {
            return;
        };
        if let Err(v) = dec.event(d, deltas) {
            deltas.clear();
            self.upstream_error(&v, prov_name, secret, out);
            return;
        }
        for delta in deltas.drain(..) {
            match &delta {
                dialect::Delta::Text(t) | dialect::Delta::ToolArgs(t) => {
                    meter.first_token();
                    meter.add_generated_chars(t.chars().count());
                }
                dialect::Delta::Stop(_) => self.saw_finish = true,
                dialect::Delta::Usage(u) => self.usage = Some(*u),
                _ => {}
            }
            enc.delta(&delta, out);
        }
    }

    /// The closing events of a stream that ended well, settling the call.
    fn finish(&mut self, meter: &mut CallMeter) -> Vec<u8> {
        let mut out = Vec::new();
        match &mut self.relay {
            Relay::Chat => {
                if self.wants_usage && !self.usage_sent {
                    out = self.synthesised_usage(meter);
                } else if !meter.is_finished() {
                    meter.finish(Outcome::Ok, 200, self.usage);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            Relay::Anthropic { .. } => {
                if !meter.is_finished() {
                    meter.finish(Outcome::Ok, 200, self.usage);
                }
            }
            Relay::Translate { enc, .. } => {
                let info = meter.finish(Outcome::Ok, 200, self.usage);
                enc.finish(&info, &mut out);
            }
        }
        out
    }

    /// One `data:` event: read, counted, settled if it carries the usage the
    /// client asked for, and written out; an error chunk ends the stream.
    fn chunk(
        &mut self,
        d: &str,
        meter: &mut CallMeter,
        prov_name: &str,
        secret: &str,
        out: &mut Vec<u8>,
    ) {
        let wanted = Wanted {
            ids: self.id.is_none(),
            choices: true,
        };
        let Some(chunk) = Answer::parse(d, wanted) else {
            // Not a JSON object: passed on as it came.
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(d.as_bytes());
            out.extend_from_slice(b"\n\n");
            return;
        };
        let usage = chunk.usage();
        if usage.is_some() {
            self.usage = usage;
        }
        if chunk.has_error() {
            let n = serde_json::from_str::<Value>(d)
                .ok()
                .and_then(|v| errors::from_json_error(prov_name, &v, secret));
            let e = match n {
                Some(n) => api_error(n),
                None => ApiError::upstream(format!("{prov_name}: the provider reported an error.")),
            };
            sse_error(out, &e);
            self.failed = Some(e);
            return;
        }
        let choices = chunk.choices().unwrap_or_default();
        if choices.chars > 0 {
            meter.first_token();
            meter.add_generated_chars(choices.chars);
        }
        self.saw_finish |= choices.finished;
        if self.id.is_none() {
            self.id = chunk.raw("id").map(str::to_owned);
            self.created = chunk.raw("created").map(str::to_owned);
            self.object = chunk.raw("object").map(str::to_owned);
        }
        let no_choices = chunk.choices().is_some() && choices.count == 0;
        if no_choices && !self.wants_usage {
            // Only the usage the client did not ask for: dropped.
            return;
        }
        // The client asked for usage: the chunk that carries it settles the
        // call and gets `_usage_info`.
        let mut info = None;
        if self.wants_usage && usage.is_some() && !meter.is_finished() {
            info = Some(meter.finish(Outcome::Ok, 200, usage));
            self.usage_sent = true;
        }
        out.extend_from_slice(b"data: ");
        chunk.write(
            out,
            &self.client_model_json,
            self.wants_usage,
            info.as_ref(),
        );
        out.extend_from_slice(b"\n\n");
    }

    /// The usage chunk a client asked for when the upstream sent none.
    fn synthesised_usage(&self, meter: &mut CallMeter) -> Vec<u8> {
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
        let mut out = b"data: ".to_vec();
        let _ = serde_json::to_writer(&mut out, &chunk);
        out.extend_from_slice(b"\n\n");
        out
    }
}

/// The usage an event stream reported (its last), read from the whole
/// stream's bytes: for an upstream that streamed though it was asked not to.
pub(super) fn usage_of_events(bytes: &[u8], max_event: usize) -> Option<Usage> {
    let mut reader = SseReader::new(max_event);
    let mut events = Vec::new();
    reader.push(bytes, &mut events).ok()?;
    reader.finish(&mut events);
    events.iter().rev().find_map(|e| match e {
        Event::Data(d) => Answer::parse(d, Wanted::default()).and_then(|a| a.usage()),
        Event::Comment(_) => None,
    })
}

/// A call whose upstream answered with a stream, ready to be pumped.
pub(super) struct StreamCall {
    pub st: AppState,
    pub meter: CallMeter,
    pub resp: crate::upstream::client::UpResponse,
    pub target: Route,
    pub client_model: String,
    /// Responses: the request's settings its events repeat.
    pub echo: Option<std::sync::Arc<serde_json::Map<String, Value>>>,
    pub wants_usage: bool,
    pub ep: Endpoint,
    pub way: dialect::Way,
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
        echo,
        wants_usage,
        ep,
        way,
        started,
    } = call;
    let prov = target.provider.clone();
    let secret = prov.api_key.expose().to_owned();
    let drain = st.config.metering.on_disconnect == OnDisconnect::Drain;
    let mut upstream = resp.bytes_stream();
    let max_event = st.config.routing.max_event_bytes;
    let mut reader = SseReader::new(max_event);
    let mut events = Vec::new();
    let relay = match way {
        dialect::Way::Translate => Relay::Translate {
            dec: dialect::decoder(prov.api),
            enc: dialect::encoder(
                ep,
                &client_model,
                wants_usage,
                &meter.info.request_id,
                meter.prompt_estimate,
                echo,
            ),
            deltas: Vec::new(),
        },
        _ if ep == Endpoint::Messages => Relay::Anthropic { input: None },
        _ => Relay::Chat,
    };
    let mut p = Pump {
        relay,
        client_model_json: crate::json::quoted(&client_model),
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
    let mut oversized = false;
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
                oversized = reader.push(&chunk, &mut events).is_err();
                oversized
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
        if oversized && p.failed.is_none() {
            // The events complete before the oversized one went out above.
            let e = ApiError::upstream(format!(
                "{}: the provider sent an event larger than {max_event} bytes ([routing] max_event_bytes).",
                prov.name
            ));
            if !client_gone {
                p.write_error(&e, &mut out);
            }
            p.failed = Some(e);
        }
        if failed_before && !client_gone {
            let e = p
                .failed
                .clone()
                .unwrap_or_else(|| ApiError::upstream("stream failed"));
            p.write_error(&e, &mut out);
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
            if tx.send(Bytes::from(out)).await.is_err() {
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
        // Usage already reported is charged (CallMeter::finish).
        meter.finish(Outcome::UpstreamError, status, p.usage);
    } else if client_gone || cut {
        status = 499;
        // Usage the upstream already reported is exact (always so after a
        // drain); without it the charge is the prompt and the text so far.
        if !meter.is_finished() {
            let code = if p.usage.is_some() { 200 } else { 499 };
            meter.finish(Outcome::ClientCancelled, code, p.usage);
        }
        if cut && !client_gone {
            let mut out = Vec::new();
            p.write_error(&shutting_down(), &mut out);
            let _ = tx.try_send(Bytes::from(out));
        }
    } else if !p.saw_done && !p.saw_finish && p.usage.is_none() {
        let e = ApiError::upstream(format!(
            "{}: the provider closed the stream before it finished.",
            prov.name
        ));
        status = 502;
        let mut out = Vec::new();
        p.write_error(&e, &mut out);
        let _ = tx.send(Bytes::from(out)).await;
        meter.finish(Outcome::UpstreamError, 502, None);
        st.health.record(&prov.id, false);
    } else {
        status = 200;
        let out = p.finish(&mut meter);
        if !out.is_empty() {
            let _ = tx.send(Bytes::from(out)).await;
        }
    }
    telemetry::record_request(
        &prov.id,
        &meter.info.metric_model,
        ep.name(),
        status,
        started.elapsed().as_secs_f64(),
    );
}
