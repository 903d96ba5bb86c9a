//! Streaming answers: the upstream's Server-Sent Events are read by a task of
//! their own and forwarded as each network read arrives, with `model` renamed,
//! usage handled as SPEC §5 says, and the call settled however the stream ends
//! (finished, upstream error, client gone, shutdown).

use super::answer::{Answer, Wanted};
use super::proxy::{api_error, shutting_down, Endpoint};
use crate::config::OnDisconnect;
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

/// State of one stream being pumped.
struct Pump {
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
                Event::Data(d) => self.chunk(&d, meter, prov_name, secret, &mut out),
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
    let max_event = st.config.routing.max_event_bytes;
    let mut reader = SseReader::new(max_event);
    let mut events = Vec::new();
    let mut p = Pump {
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
                sse_error(&mut out, &e);
            }
            p.failed = Some(e);
        }
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
            sse_error(&mut out, &shutting_down());
            let _ = tx.try_send(Bytes::from(out));
        }
    } else if !p.saw_done && !p.saw_finish && p.usage.is_none() {
        let e = ApiError::upstream(format!(
            "{}: the provider closed the stream before it finished.",
            prov.name
        ));
        status = 502;
        let mut out = Vec::new();
        sse_error(&mut out, &e);
        let _ = tx.send(Bytes::from(out)).await;
        meter.finish(Outcome::UpstreamError, 502, None);
        st.health.record(&prov.id, false);
    } else {
        status = 200;
        let mut out = Vec::new();
        if p.wants_usage && !p.usage_sent {
            out = p.synthesised_usage(&mut meter);
        } else if !meter.is_finished() {
            meter.finish(Outcome::Ok, 200, p.usage);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        let _ = tx.send(Bytes::from(out)).await;
    }
    telemetry::record_request(
        &prov.id,
        &meter.info.metric_model,
        ep.name(),
        status,
        started.elapsed().as_secs_f64(),
    );
}
