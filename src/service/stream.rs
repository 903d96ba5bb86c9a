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
    prefix: ChunkPrefix,
}

/// What the pump needs of an ordinary chunk, found in one pass over its text.
#[derive(Default)]
struct ChunkScan {
    model: Option<json_edit::Field>,
    usage: Option<json_edit::Field>,
    id: Option<json_edit::Field>,
    created: Option<json_edit::Field>,
    object: Option<json_edit::Field>,
    /// `error` with a value other than null: the general path.
    error: bool,
    /// Characters of generated text: `delta.content`, `delta.reasoning`,
    /// `text` and tool-call arguments, counted in the JSON text.
    chars: usize,
    finished: bool,
    /// `choices` is present and empty.
    no_choices: bool,
}

/// The fields before `choices` of the last chunk scanned. Upstreams repeat
/// them byte for byte in every chunk (`id`, `object`, `created`, `model`), so
/// a chunk that starts with the same bytes is scanned from `choices` on.
#[derive(Default)]
pub(super) struct ChunkPrefix {
    bytes: Vec<u8>,
    model: Option<json_edit::Field>,
}

/// Scans a chunk: one walk over its fields, descending only into `choices`
/// and each choice's `delta`; no tree, no allocation. `None` if the chunk is
/// not an object of that shape (the general path then parses it).
fn scan_chunk(d: &str, prefix: &mut ChunkPrefix) -> Option<ChunkScan> {
    use json_edit::{
        skip_ws, string_chars, value_end, walk_array, walk_fields, walk_object, Field,
    };
    let b = d.as_bytes();
    let mut sc = ChunkScan::default();
    let chars_of = |s: usize, e: usize| string_chars(&d[s..e]).unwrap_or(0);
    let cached = !prefix.bytes.is_empty()
        && b.len() > prefix.bytes.len()
        && b[..prefix.bytes.len()] == prefix.bytes[..];
    // Where `choices` starts, when every field before it is plain (no usage or
    // error): the prefix to remember for the next chunk.
    let mut choices_at = None;
    let mut plain_before = true;
    if cached {
        sc.model = prefix.model;
    }
    let mut visit = |key: &[u8], key_start: usize, vs: usize| {
        if key == b"choices" {
            if plain_before && choices_at.is_none() {
                choices_at = Some(key_start);
            }
            let mut n = 0;
            let end = walk_array(b, vs, |cs| {
                n += 1;
                walk_object(b, cs, |key, _, vs| match key {
                    b"delta" if b.get(vs) == Some(&b'{') => walk_object(b, vs, |key, _, vs| {
                        let e = value_end(b, vs)?;
                        match key {
                            b"content" | b"reasoning" => sc.chars += chars_of(vs, e),
                            b"tool_calls" => sc.chars += tool_call_chars(&d[vs..e]),
                            _ => {}
                        }
                        Some(e)
                    }),
                    b"text" => {
                        let e = value_end(b, vs)?;
                        sc.chars += chars_of(vs, e);
                        Some(e)
                    }
                    b"finish_reason" => {
                        let e = value_end(b, vs)?;
                        sc.finished |= &b[vs..e] != b"null";
                        Some(e)
                    }
                    _ => value_end(b, vs),
                })
            })?;
            sc.no_choices = n == 0;
            return Some(end);
        }
        let e = value_end(b, vs)?;
        let f = Some(Field {
            key_start,
            value_start: vs,
            value_end: e,
        });
        let null = &b[vs..e] == b"null";
        match key {
            b"model" => sc.model = f,
            b"usage" => {
                sc.usage = f;
                plain_before &= choices_at.is_some();
            }
            b"error" => {
                sc.error |= !null;
                plain_before &= choices_at.is_some();
            }
            b"id" => sc.id = f,
            b"created" => sc.created = f,
            b"object" => sc.object = f,
            _ => {}
        }
        Some(e)
    };
    let end = if cached {
        walk_fields(b, prefix.bytes.len(), &mut visit)?
    } else {
        walk_object(b, skip_ws(b, 0), &mut visit)?
    };
    if skip_ws(b, end) != b.len() {
        return None;
    }
    if !cached {
        match choices_at {
            Some(at) => {
                prefix.bytes.clear();
                prefix.bytes.extend_from_slice(&b[..at]);
                prefix.model = sc.model.filter(|m| m.value_end <= at);
            }
            None => prefix.bytes.clear(),
        }
    }
    Some(sc)
}

/// Characters of the `function.arguments` of each tool call.
fn tool_call_chars(calls: &str) -> usize {
    use json_edit::{value_end, walk_array, walk_object};
    let b = calls.as_bytes();
    let mut n = 0;
    let _ = walk_array(b, 0, |cs| {
        walk_object(b, cs, |key, _, vs| {
            if key != b"function" {
                return value_end(b, vs);
            }
            walk_object(b, vs, |key, _, vs| {
                let e = value_end(b, vs)?;
                if key == b"arguments" {
                    n += json_edit::string_chars(&calls[vs..e]).unwrap_or(0);
                }
                Some(e)
            })
        })
        .or_else(|| value_end(b, cs))
    });
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
        // Room for the events as they came, the framing and a usage object:
        // the output is written without growing in the common case.
        let size: usize = events
            .iter()
            .map(|e| match e {
                Event::Data(d) | Event::Comment(d) => d.len() + 16,
            })
            .sum();
        let mut out = BytesMut::with_capacity(size + 320);
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
        let Some(sc) = scan_chunk(d, &mut self.prefix) else {
            return false;
        };
        if sc.error {
            return false;
        }
        let chunk_usage = sc
            .usage
            .map(|f| json_edit::value(d, &f))
            .filter(|v| *v != "null")
            .and_then(Usage::from_json_text);
        if chunk_usage.is_some() {
            self.usage = chunk_usage;
        }
        if sc.chars > 0 {
            meter.first_token();
            meter.add_generated_chars(sc.chars);
        }
        self.saw_finish |= sc.finished;
        let empty = sc.no_choices;
        if self.id.is_none() {
            let raw = |f: Option<json_edit::Field>| f.map(|f| json_edit::value(d, &f).to_owned());
            self.id = raw(sc.id);
            self.created = raw(sc.created);
            self.object = raw(sc.object);
        }
        if empty && !self.wants_usage {
            return true;
        }
        // The client asked for usage: the chunk that carries it settles the
        // call and gets `_usage_info`, as the last field.
        let mut usage_info = None;
        if self.wants_usage && chunk_usage.is_some() && !meter.is_finished() {
            let info = meter.finish(Outcome::Ok, 200, chunk_usage);
            let info = info.to_json();
            usage_info = Some(format!("\"_usage_info\":{info}"));
            self.usage_sent = true;
        }
        // The new model name, `usage` taken out (the client did not ask for
        // it), `_usage_info` added.
        let mut edits: [json_edit::Edit; 3] = Default::default();
        let mut n = 0;
        if let Some(f) = sc.model {
            if json_edit::value(d, &f) != self.client_model_json {
                edits[n] = json_edit::Edit::replace(&f, self.client_model_json.as_str());
                n += 1;
            }
        }
        if let (Some(f), false) = (sc.usage, self.wants_usage) {
            edits[n] = json_edit::Edit::remove(d, &f);
            n += 1;
        }
        if let Some(e) = usage_info.and_then(|u| json_edit::Edit::append(d, 0, &u)) {
            edits[n] = e;
            n += 1;
        }
        out.reserve(d.len() + edits[..n].iter().map(|e| e.with.len()).sum::<usize>() + 8);
        out.put_slice(b"data: ");
        json_edit::apply(d, &mut edits[..n], out);
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
        client_model_json: crate::upstream::json_edit::quoted(&client_model),
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
        prefix: ChunkPrefix::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_chars(chunk: &Value) -> usize {
        let mut n = 0;
        for c in chunk["choices"].as_array().into_iter().flatten() {
            generated_text(c, |s| n += s.chars().count());
        }
        n
    }

    #[test]
    fn scan_finds_fields_and_counts_like_a_parse() {
        let chunks = [
            r#"{"id":"c1","object":"chat.completion.chunk","created":17,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hé \"x\" \u00e9\ud83d\ude00"},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c1","choices":[{"delta":{"reasoning":"hm","tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#" { "choices" : [ { "text" : "abc" , "finish_reason" : null } , {"delta":null} ] , "model" : "x" } "#,
            r#"{"choices":[],"usage":null}"#,
        ];
        // Each chunk scanned fresh, then again with the prefix of the one
        // before it (the same prefix when the chunk repeats).
        let mut shared = ChunkPrefix::default();
        let twice = chunks.iter().flat_map(|c| [*c, *c]);
        for (i, d) in chunks.iter().copied().chain(twice).enumerate() {
            let v: Value = serde_json::from_str(d).unwrap();
            let sc = if i < chunks.len() {
                scan_chunk(d, &mut ChunkPrefix::default())
            } else {
                scan_chunk(d, &mut shared)
            }
            .unwrap_or_else(|| panic!("{d}"));
            assert_eq!(sc.chars, reference_chars(&v), "{d}");
            let finished = v["choices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| !c["finish_reason"].is_null());
            assert_eq!(sc.finished, finished, "{d}");
            assert!(!sc.error);
            assert_eq!(sc.no_choices, v["choices"].as_array().unwrap().is_empty());
            if let Some(f) = sc.model {
                assert_eq!(json_edit::value(d, &f), v["model"].to_string());
            }
        }
        let scan = |d: &str| scan_chunk(d, &mut ChunkPrefix::default());
        let u = scan(r#"{"usage":{"total_tokens":3},"choices":[]}"#).unwrap();
        assert!(!u.error && u.usage.is_some());
        assert!(scan(r#"{"error":{"message":"x"}}"#).unwrap().error);
        assert!(!scan(r#"{"error":null,"choices":[]}"#).unwrap().error);
        for bad in [
            r#"{"choices":[1]}"#,
            r#"{"choices":{}}"#,
            "[DONE]",
            r#"{"a":1"#,
        ] {
            assert!(scan(bad).is_none(), "{bad}");
        }
        // A prefix is reused only when the chunk starts with it; a usage chunk
        // with the same prefix is still seen as one.
        let mut p = ChunkPrefix::default();
        let a = r#"{"id":"x","model":"m","choices":[{"delta":{"content":"ab"}}]}"#;
        assert_eq!(scan_chunk(a, &mut p).unwrap().chars, 2);
        let again = scan_chunk(a, &mut p).unwrap();
        assert_eq!(again.chars, 2);
        assert_eq!(json_edit::value(a, &again.model.unwrap()), "\"m\"");
        let u = r#"{"id":"x","model":"m","choices":[],"usage":{"total_tokens":9}}"#;
        let sc = scan_chunk(u, &mut p).unwrap();
        assert_eq!(
            json_edit::value(u, &sc.usage.unwrap()),
            r#"{"total_tokens":9}"#
        );
        let other = r#"{"id":"y","model":"n","choices":[{"text":"abc"}]}"#;
        let sc = scan_chunk(other, &mut p).unwrap();
        assert_eq!(sc.chars, 3);
        assert_eq!(json_edit::value(other, &sc.model.unwrap()), "\"n\"");
    }
}
