//! An incremental Server-Sent Events reader: bytes go in as the network
//! delivers them (events may be split anywhere, even inside a UTF-8 character
//! or a `\r\n`), whole events come out. An event larger than the reader's
//! limit is an error, so memory never grows with what an upstream sends.

/// One event of the upstream stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The joined `data:` lines of an event.
    Data(String),
    /// An event with only comment lines (`: keep-alive`), forwarded as it came.
    Comment(String),
}

/// An event grew past the reader's limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

pub struct SseReader {
    /// The most bytes an event may hold (its lines, as they came).
    limit: usize,
    /// Bytes of the event being read so far.
    size: usize,
    /// Bytes of the line being read.
    line: Vec<u8>,
    /// The data lines of the event being read.
    data: Option<String>,
    comment: Option<String>,
    /// The previous chunk ended with `\r`; a leading `\n` belongs to it.
    after_cr: bool,
}

impl SseReader {
    /// A reader refusing events larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        SseReader {
            limit,
            size: 0,
            line: Vec::new(),
            data: None,
            comment: None,
            after_cr: false,
        }
    }

    /// Feeds bytes; complete events are appended to `out`. Past an event
    /// larger than the limit, `Err` (the events before it are in `out`).
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Event>) -> Result<(), TooLarge> {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', bytes) {
            // The line: what was buffered of it, this part, its end.
            self.size += self.line.len() + pos + 1;
            if self.size > self.limit {
                return Err(TooLarge);
            }
            if self.line.is_empty() {
                // The whole line is in this read: no copy.
                self.end_line(&bytes[..pos], out);
            } else {
                self.line.extend_from_slice(&bytes[..pos]);
                let line = std::mem::take(&mut self.line);
                self.end_line(&line, out);
                // Keep the buffer's capacity for the next partial line.
                self.line = line;
                self.line.clear();
            }
            let was_cr = bytes[pos] == b'\r';
            bytes = &bytes[pos + 1..];
            if was_cr {
                if bytes.is_empty() {
                    self.after_cr = true;
                } else if bytes[0] == b'\n' {
                    bytes = &bytes[1..];
                }
            }
        }
        if self.size + self.line.len() + bytes.len() > self.limit {
            return Err(TooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.end_line(&line, out);
        }
        self.dispatch(out);
    }

    fn end_line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if let Some(comment) = line.strip_prefix(b":") {
            let c = self.comment.get_or_insert_with(String::new);
            if !c.is_empty() {
                c.push('\n');
            }
            c.push_str(&String::from_utf8_lossy(comment));
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        // `event:`, `id:` and `retry:` carry nothing the gateway forwards.
        if field != b"data" {
            return;
        }
        let value = String::from_utf8_lossy(value);
        match &mut self.data {
            None => self.data = Some(value.into_owned()),
            Some(d) => {
                d.push('\n');
                d.push_str(&value);
            }
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        self.size = 0;
        if let Some(d) = self.data.take() {
            out.push(Event::Data(d));
            self.comment = None;
        } else if let Some(c) = self.comment.take() {
            out.push(Event::Comment(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_in_pieces(input: &[u8], piece: usize) -> Vec<Event> {
        let mut r = SseReader::new(1 << 20);
        let mut out = Vec::new();
        for c in input.chunks(piece) {
            r.push(c, &mut out).unwrap();
        }
        r.finish(&mut out);
        out
    }

    #[test]
    fn events_survive_any_split() {
        let input = "data: {\"a\":\"é\"}\n\n: OPENROUTER PROCESSING\n\ndata: {\"b\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        let want = vec![
            Event::Data("{\"a\":\"é\"}".into()),
            Event::Comment(" OPENROUTER PROCESSING".into()),
            Event::Data("{\"b\":1}".into()),
            Event::Data("line1\nline2".into()),
            Event::Data("[DONE]".into()),
        ];
        for piece in 1..input.len() {
            assert_eq!(
                read_in_pieces(input.as_bytes(), piece),
                want,
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn unterminated_last_event_is_kept() {
        assert_eq!(
            read_in_pieces(b"data: {}", 3),
            vec![Event::Data("{}".into())]
        );
        assert_eq!(read_in_pieces(b"", 3), vec![]);
    }

    #[test]
    fn an_event_larger_than_the_limit_is_refused_as_it_grows() {
        // Events up to the limit pass, split anywhere; one byte more does not,
        // whether it comes in one piece, line by line, or without a line end.
        let ok = format!("data: {}\n\n", "x".repeat(90));
        assert_eq!(ok.len(), 98);
        for piece in [1, 7, 98] {
            let mut r = SseReader::new(98);
            let mut out = Vec::new();
            for c in ok.repeat(3).as_bytes().chunks(piece) {
                r.push(c, &mut out).unwrap();
            }
            assert_eq!(out.len(), 3);
        }
        let long_line = format!("data: {}\n\n", "x".repeat(91));
        let many_lines = "data: x\n".repeat(20) + "\n";
        let endless = "data: ".to_owned() + &"x".repeat(200);
        for bad in [long_line, many_lines, endless] {
            for piece in [1, 7, 1000] {
                let mut r = SseReader::new(98);
                let mut out = Vec::new();
                let input = ok.clone() + &bad;
                let result = input
                    .as_bytes()
                    .chunks(piece)
                    .try_for_each(|c| r.push(c, &mut out));
                assert_eq!(result, Err(TooLarge), "{bad:?} in pieces of {piece}");
                assert_eq!(out.len(), 1, "the event before it was read");
            }
        }
    }
}
