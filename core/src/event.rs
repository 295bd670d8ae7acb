//! Parsing and validating one event.
//!
//! What it is: a JSON reader written for this one job. It walks the bytes
//! once against the schema's field trie (resolved into flat tables when the
//! [`EventParser`] is made), writes each declared field straight into its
//! slot, and skips unknown fields without building them, checking that they
//! are JSON all the same. Strings of up to 23 bytes are stored inline in
//! their [`Value`], so with [`EventParser::parse_into`] reusing an event the
//! usual event allocates nothing. A key that appears twice in any object, at
//! any depth, rejects the event: a reader that kept one of the two would let
//! a sender show one amount to the ledger and another to the risk engine.
//!
//! What it is not: the judge of bytes that are not JSON. When the fast
//! reader meets one, serde_json reads the same bytes (`serde_reader`) and
//! its error is the rejection's message, word for word as it always was.
//! A bad event is never an error of the process: it is a [`Rejection`],
//! which the caller turns into a dead-letter record with the original bytes.

mod serde_reader;

use std::sync::Arc;

use smallvec::SmallVec;

use crate::schema::Node;
use crate::time::{MAX_EPOCH_MS, parse_rfc3339_ms};
use crate::{EVENT_ID_SLOT, EVENT_TYPE_SLOT, Schema, Str, TIMESTAMP_SLOT, Value, ValueType};

/// Events larger than this are rejected unread unless configured otherwise.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;

/// A parsed, validated event: one value per schema slot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    values: Box<[Value]>,
}

impl Event {
    /// An event of `slots` missing values: a buffer for
    /// [`EventParser::parse_into`].
    pub fn with_slots(slots: usize) -> Event {
        Event {
            values: vec![Value::Missing; slots].into_boxed_slice(),
        }
    }

    /// Builds an event from slot values (tests, generators). The built-in
    /// slots must hold an id, a type and a timestamp.
    pub fn from_values(values: Vec<Value>) -> Event {
        debug_assert!(values.len() > TIMESTAMP_SLOT);
        Event {
            values: values.into_boxed_slice(),
        }
    }

    pub fn id(&self) -> &str {
        self.get(EVENT_ID_SLOT).as_str().unwrap_or("")
    }

    /// The id as the event holds it, for decisions: an id of up to 23
    /// bytes is inline and a longer one shared, so this never allocates.
    pub fn id_str(&self) -> Str {
        match self.get(EVENT_ID_SLOT) {
            Value::String(s) => s.clone(),
            _ => Str::default(),
        }
    }

    pub fn event_type(&self) -> &str {
        self.get(EVENT_TYPE_SLOT).as_str().unwrap_or("")
    }

    /// Event time, milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> i64 {
        self.get(TIMESTAMP_SLOT).as_timestamp().unwrap_or(0)
    }

    /// Every slot, in schema order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    pub fn get(&self, slot: usize) -> &Value {
        self.values.get(slot).unwrap_or(&Value::Missing)
    }
}

/// What kind of problem sent an event to the dead letters; the label of the
/// `verdict_dead_letters_total{reason}` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    TooLarge,
    NotJson,
    NotObject,
    MissingField,
    WrongType,
    BadTimestamp,
    InvalidValue,
    DuplicateKey,
}

impl RejectionKind {
    pub const ALL: [RejectionKind; 8] = [
        RejectionKind::TooLarge,
        RejectionKind::NotJson,
        RejectionKind::NotObject,
        RejectionKind::MissingField,
        RejectionKind::WrongType,
        RejectionKind::BadTimestamp,
        RejectionKind::InvalidValue,
        RejectionKind::DuplicateKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::TooLarge => "too_large",
            RejectionKind::NotJson => "not_json",
            RejectionKind::NotObject => "not_object",
            RejectionKind::MissingField => "missing_field",
            RejectionKind::WrongType => "wrong_type",
            RejectionKind::BadTimestamp => "bad_timestamp",
            RejectionKind::InvalidValue => "invalid_value",
            RejectionKind::DuplicateKey => "duplicate_key",
        }
    }
}

/// Why an event was refused. The `Display` text is the dead-letter reason:
/// it names the field and what was expected, so a person can fix the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(
        "event is {size} bytes, over the limit of {limit} bytes (raise `max_event_bytes` if such events are legitimate)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("not valid JSON: {message}")]
    NotJson { message: String },
    #[error("an event must be a JSON object, found {found}")]
    NotObject { found: &'static str },
    #[error("required field `{field}` is missing")]
    MissingField { field: String },
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "field `{field}`: {message}; use RFC 3339 (2026-11-24T08:15:30.250Z) or epoch milliseconds"
    )]
    BadTimestamp { field: String, message: String },
    #[error("field `{field}`: {message}")]
    InvalidValue { field: String, message: String },
    /// One object names a key twice; `field` is the key's path
    /// (`attributes.channel`, `items[2].sku`).
    #[error(
        "field `{field}` appears twice in one object; send each field once (readers disagree on which of the two counts)"
    )]
    DuplicateKey { field: String },
}

impl Rejection {
    pub fn kind(&self) -> RejectionKind {
        match self {
            Rejection::TooLarge { .. } => RejectionKind::TooLarge,
            Rejection::NotJson { .. } => RejectionKind::NotJson,
            Rejection::NotObject { .. } => RejectionKind::NotObject,
            Rejection::MissingField { .. } => RejectionKind::MissingField,
            Rejection::WrongType { .. } => RejectionKind::WrongType,
            Rejection::BadTimestamp { .. } => RejectionKind::BadTimestamp,
            Rejection::InvalidValue { .. } => RejectionKind::InvalidValue,
            Rejection::DuplicateKey { .. } => RejectionKind::DuplicateKey,
        }
    }
}

/// Turns bytes into events against one schema.
#[derive(Debug, Clone)]
pub struct EventParser {
    schema: Arc<Schema>,
    trie: Arc<Trie>,
    max_bytes: usize,
}

/// The schema's field trie as flat tables: node 0 is the root.
#[derive(Debug)]
struct Trie {
    nodes: Vec<TrieNode>,
    /// Keys hashed for finding duplicates among unknown keys; seeded per
    /// process, so a sender cannot make every key collide.
    hasher: ahash::RandomState,
}

#[derive(Debug)]
struct TrieNode {
    /// The children's keys and node indices.
    children: Vec<(Box<[u8]>, u32)>,
    leaf: Option<(usize, ValueType)>,
    path: Box<str>,
}

impl Trie {
    fn of(schema: &Schema) -> Trie {
        fn add(nodes: &mut Vec<TrieNode>, node: &Node) -> u32 {
            let at = nodes.len();
            nodes.push(TrieNode {
                children: Vec::new(),
                leaf: node.leaf,
                path: node.path.clone(),
            });
            let mut kids: Vec<(&Box<str>, &Node)> = node.children.iter().collect();
            kids.sort_by_key(|(k, _)| *k);
            let children = kids
                .into_iter()
                .map(|(k, child)| (k.as_bytes().into(), add(nodes, child)))
                .collect();
            nodes[at].children = children;
            at as u32
        }
        let mut nodes = Vec::new();
        add(&mut nodes, &schema.root);
        Trie {
            nodes,
            hasher: ahash::RandomState::new(),
        }
    }
}

impl EventParser {
    pub fn new(schema: Arc<Schema>) -> EventParser {
        EventParser {
            trie: Arc::new(Trie::of(&schema)),
            schema,
            max_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }

    pub fn with_max_bytes(mut self, max_bytes: usize) -> EventParser {
        self.max_bytes = max_bytes;
        self
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// An empty event of this schema's size, to pass to
    /// [`parse_into`](Self::parse_into) again and again.
    pub fn new_event(&self) -> Event {
        Event::with_slots(self.schema.len())
    }

    /// Parses and validates one event. Never panics, whatever the bytes.
    pub fn parse(&self, bytes: &[u8]) -> Result<Event, Rejection> {
        let mut event = self.new_event();
        self.parse_into(bytes, &mut event)?;
        Ok(event)
    }

    /// Parses and validates one event into `event`, reusing its slots: an
    /// event of the usual shape allocates nothing. After a rejection the
    /// event's values are unspecified (but valid values). Never panics.
    pub fn parse_into(&self, bytes: &[u8], event: &mut Event) -> Result<(), Rejection> {
        if bytes.len() > self.max_bytes {
            return Err(Rejection::TooLarge {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        if event.values.len() == self.schema.len() {
            event.values.fill(Value::Missing);
        } else {
            *event = self.new_event();
        }
        let mut r = Reader {
            b: bytes,
            i: 0,
            trie: &self.trie,
            values: &mut event.values,
            problem: None,
            duplicate: None,
            keys: SmallVec::new(),
            frames: SmallVec::new(),
        };
        let outcome = r.event();
        let (problem, duplicate) = (r.problem.take(), r.duplicate.take());
        match outcome {
            Ok(None) => {}
            Ok(Some(found)) => return Err(Rejection::NotObject { found }),
            Err(Syntax) => return Err(self.not_json(bytes)),
        }
        if let Some(d) = duplicate {
            return Err(d);
        }
        if let Some(p) = problem {
            return Err(p);
        }
        for (slot, field) in self.schema.fields().iter().enumerate() {
            if field.required && event.values[slot].is_missing() {
                return Err(Rejection::MissingField {
                    field: field.path.clone(),
                });
            }
        }
        if event.values[EVENT_ID_SLOT].as_str() == Some("") {
            return Err(Rejection::InvalidValue {
                field: "event_id".into(),
                message: "must not be empty".into(),
            });
        }
        Ok(())
    }

    /// The rejection of bytes the fast reader found not to be JSON, in
    /// serde_json's words.
    #[cold]
    fn not_json(&self, bytes: &[u8]) -> Rejection {
        match serde_reader::read(&self.schema, bytes) {
            Err(r @ Rejection::NotJson { .. }) => r,
            // The two readers disagree; the stricter one decides, since a
            // byte sequence one JSON reader refuses is not safe to accept.
            _ => Rejection::NotJson {
                message: "not JSON as RFC 8259 defines it".into(),
            },
        }
    }
}

pub(crate) fn expected(ty: ValueType) -> &'static str {
    match ty {
        ValueType::Number => "a number",
        ValueType::String => "a string",
        ValueType::Bool => "a boolean",
        ValueType::Timestamp => "a timestamp (RFC 3339 string or epoch milliseconds)",
    }
}

/// Shortens a found string for a message, on a character boundary.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 40;
    if s.len() <= MAX {
        return format!("string {s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("string {:?}…", &s[..end])
}

/// A number read as epoch milliseconds, or why it is not a timestamp.
pub(crate) fn epoch_ms_value(n: f64) -> Result<Value, String> {
    if n.fract() == 0.0 && (0.0..=MAX_EPOCH_MS as f64).contains(&n) {
        Ok(Value::Timestamp(n as i64))
    } else {
        Err(format!(
            "{n} is not epoch milliseconds between 1970 and 9999"
        ))
    }
}

/// The bytes are not JSON (where exactly is serde_json's to say).
struct Syntax;

type R<T> = Result<T, Syntax>;

/// A key of the object being read that is not in the schema: its hash and
/// where its opening quote is, to confirm a repeat and to name it.
#[derive(Clone, Copy)]
struct SeenKey {
    hash: u64,
    at: u32,
}

/// An object or array being skipped.
#[derive(Clone, Copy)]
struct Frame {
    object: bool,
    /// Where this container's keys start in `Reader::keys`.
    keys_from: u32,
    /// The key (its opening quote) or index under which the value being
    /// read sits, for naming a duplicate's path.
    at: u32,
}

/// A JSON string's decoded content: borrowed when it has no escapes.
enum Text<'a> {
    Raw(&'a [u8]),
    Decoded(SmallVec<[u8; 64]>),
}

impl Text<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Raw(b) => b,
            Text::Decoded(v) => v,
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    trie: &'a Trie,
    values: &'a mut [Value],
    problem: Option<Rejection>,
    duplicate: Option<Rejection>,
    /// Unknown keys of the objects open now, innermost last.
    keys: SmallVec<[SeenKey; 16]>,
    /// The containers a skip is inside, innermost last.
    frames: SmallVec<[Frame; 16]>,
}

/// Bytes that end the plain run of a string: the quote, the backslash and
/// the control characters JSON forbids unescaped.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl<'a> Reader<'a> {
    fn note(&mut self, problem: Rejection) {
        if self.problem.is_none() {
            self.problem = Some(problem);
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                break;
            }
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&mut self) -> R<u8> {
        self.ws();
        self.b.get(self.i).copied().ok_or(Syntax)
    }

    #[inline]
    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(Syntax)
        }
    }

    /// The whole event: `None` for an object, or what was found instead.
    fn event(&mut self) -> R<Option<&'static str>> {
        let found = match self.peek()? {
            b'{' => {
                self.object(0)?;
                None
            }
            _ => Some(self.other(0, true)?),
        };
        self.ws();
        if self.i != self.b.len() {
            return Err(Syntax);
        }
        Ok(found)
    }

    /// A value that is not an object where an object was expected (the
    /// root, or a declared parent): consumed, and described. `strict`
    /// reads a string as serde_json does when it builds one.
    fn other(&mut self, node: u32, strict: bool) -> R<&'static str> {
        Ok(match self.peek()? {
            b'"' => {
                if strict {
                    self.string()?;
                } else {
                    self.skip_string()?;
                }
                "a string"
            }
            b'[' => {
                self.skip(node, 0, false)?;
                "an array"
            }
            b't' | b'f' => {
                self.boolean()?;
                "a boolean"
            }
            b'n' => {
                self.literal(b"null")?;
                "null"
            }
            _ => {
                self.number()?;
                "a number"
            }
        })
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Syntax)
        }
    }

    fn boolean(&mut self) -> R<bool> {
        if self.b[self.i] == b't' {
            self.literal(b"true").map(|()| true)
        } else {
            self.literal(b"false").map(|()| false)
        }
    }

    /// An object whose keys are looked up among trie node `node`'s
    /// children. The cursor is on `{`.
    fn object(&mut self, node: u32) -> R<()> {
        self.i += 1;
        let keys_from = self.keys.len();
        // Declared children seen so far, by position; a node with more
        // than 64 children checks the rest as unknown keys.
        let mut seen = 0u64;
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            if self.peek()? != b'"' {
                return Err(Syntax);
            }
            let key_at = self.i;
            let key = self.string()?;
            self.eat(b':')?;
            let trie = self.trie;
            let children = &trie.nodes[node as usize].children;
            let found = children.iter().position(|(k, _)| **k == *key.bytes());
            match found {
                Some(pos) if pos < 64 => {
                    let bit = 1u64 << pos;
                    if seen & bit != 0 {
                        self.duplicate_at(node, 0, &[], key_at);
                    }
                    seen |= bit;
                }
                _ => self.remember_key(key.bytes(), key_at),
            }
            match found {
                Some(pos) => {
                    let child = children[pos].1;
                    let n = &trie.nodes[child as usize];
                    match n.leaf {
                        Some((slot, ty)) => self.leaf(child, slot, ty)?,
                        None if self.peek()? == b'{' => self.object(child)?,
                        None => {
                            let found = self.other(child, true)?;
                            if found != "null" {
                                self.note(Rejection::WrongType {
                                    field: n.path.to_string(),
                                    expected: "an object",
                                    found: found.to_owned(),
                                });
                            }
                        }
                    }
                }
                None => self.skip(node, key_at as u32, false)?,
            }
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    break;
                }
                _ => return Err(Syntax),
            }
        }
        self.check_keys(keys_from, node, 0, &[]);
        self.keys.truncate(keys_from);
        Ok(())
    }

    /// Notes an unknown key of the current object.
    fn remember_key(&mut self, key: &[u8], at: usize) {
        let hash = self.trie.hasher.hash_one(key);
        self.keys.push(SeenKey {
            hash,
            at: at as u32,
        });
    }

    /// Looks for a repeat among the unknown keys `keys[from..]` of one
    /// object, and notes the first found.
    fn check_keys(&mut self, from: usize, node: u32, origin: u32, frames: &[Frame]) {
        let n = self.keys.len() - from;
        if n < 2 || self.duplicate.is_some() {
            return;
        }
        let mut repeat = None;
        if n <= 16 {
            'out: for i in from..self.keys.len() {
                for j in from..i {
                    if self.keys[i].hash == self.keys[j].hash && self.same_key(i, j) {
                        repeat = Some(self.keys[i].at);
                        break 'out;
                    }
                }
            }
        } else {
            // Sorted by hash, repeats are neighbours: n log n for an
            // object of many keys.
            self.keys[from..].sort_unstable_by_key(|k| (k.hash, k.at));
            'run: for i in from + 1..self.keys.len() {
                let mut j = i;
                while j > from && self.keys[j - 1].hash == self.keys[i].hash {
                    j -= 1;
                    if self.same_key(i, j) {
                        repeat = Some(self.keys[i].at.max(self.keys[j].at));
                        break 'run;
                    }
                }
            }
        }
        if let Some(at) = repeat {
            self.duplicate_at(node, origin, frames, at as usize);
        }
    }

    /// Whether the keys at `keys[i]` and `keys[j]` are equal once decoded.
    fn same_key(&self, i: usize, j: usize) -> bool {
        let decode = |at: u32| {
            let mut r = Reader {
                b: self.b,
                i: at as usize,
                trie: self.trie,
                values: &mut [],
                problem: None,
                duplicate: None,
                keys: SmallVec::new(),
                frames: SmallVec::new(),
            };
            r.text(false).map(|t| t.bytes().to_vec()).ok()
        };
        decode(self.keys[i].at) == decode(self.keys[j].at)
    }

    /// The decoded key whose opening quote is at `at`.
    fn key_text(&self, at: usize) -> String {
        let mut r = Reader {
            b: self.b,
            i: at,
            trie: self.trie,
            values: &mut [],
            problem: None,
            duplicate: None,
            keys: SmallVec::new(),
            frames: SmallVec::new(),
        };
        match r.text(false) {
            Ok(t) => String::from_utf8_lossy(t.bytes()).into_owned(),
            Err(Syntax) => String::new(),
        }
    }

    /// Notes that the key at `at` repeats. It is in trie node `node`'s
    /// object, or inside an unknown value there: under the key at `origin`
    /// (0: the value of the declared field itself), within the containers
    /// `frames` (each at its current key or index).
    #[cold]
    fn duplicate_at(&mut self, node: u32, origin: u32, frames: &[Frame], at: usize) {
        if self.duplicate.is_some() {
            return;
        }
        let mut path = self.trie.nodes[node as usize].path.to_string();
        let push_key = |path: &mut String, key: String| {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&key);
        };
        if origin != 0 {
            push_key(&mut path, self.key_text(origin as usize));
        }
        for f in frames {
            if f.object {
                push_key(&mut path, self.key_text(f.at as usize));
            } else {
                path.push_str(&format!("[{}]", f.at));
            }
        }
        push_key(&mut path, self.key_text(at));
        self.duplicate = Some(Rejection::DuplicateKey { field: path });
    }

    /// Reads a declared field's value into its slot, or notes what was
    /// wrong with it.
    fn leaf(&mut self, node: u32, slot: usize, ty: ValueType) -> R<()> {
        let wrong = |r: &mut Self, found: String| {
            let field = r.trie.nodes[node as usize].path.to_string();
            r.note(Rejection::WrongType {
                field,
                expected: expected(ty),
                found,
            });
        };
        match self.peek()? {
            b'"' => {
                let text = self.string()?;
                let s = std::str::from_utf8(text.bytes()).map_err(|_| Syntax)?;
                match ty {
                    ValueType::String => self.values[slot] = Value::String(Str::new(s)),
                    ValueType::Timestamp => match timestamp(s) {
                        Ok(ms) => self.values[slot] = Value::Timestamp(ms),
                        Err(message) => {
                            let field = self.trie.nodes[node as usize].path.to_string();
                            self.note(Rejection::BadTimestamp { field, message });
                        }
                    },
                    _ => {
                        let found = quote(s);
                        wrong(self, found);
                    }
                }
            }
            b't' | b'f' => {
                let v = self.boolean()?;
                match ty {
                    ValueType::Bool => self.values[slot] = Value::Bool(v),
                    _ => wrong(self, format!("boolean {v}")),
                }
            }
            b'n' => {
                self.literal(b"null")?;
                self.values[slot] = Value::Missing;
            }
            b'[' => {
                self.skip(node, 0, false)?;
                wrong(self, "an array".into());
            }
            b'{' => {
                // The leaf's own keys are checked for repeats like any.
                self.skip(node, 0, true)?;
                wrong(self, "an object".into());
            }
            _ => {
                let v = self.number()?;
                match ty {
                    ValueType::Number => self.values[slot] = Value::Number(v),
                    ValueType::Timestamp => match epoch_ms_value(v) {
                        Ok(t) => self.values[slot] = t,
                        Err(message) => {
                            let field = self.trie.nodes[node as usize].path.to_string();
                            self.note(Rejection::BadTimestamp { field, message });
                        }
                    },
                    _ => wrong(self, format!("number {v}")),
                }
            }
        }
        Ok(())
    }

    /// Skips one value of any shape, checking it is JSON and that no
    /// object in it repeats a key. `node` and `origin` say where it sits,
    /// to name a duplicate (see [`Reader::duplicate_at`]). Iterative:
    /// nesting costs memory, never stack.
    ///
    /// Keys are read as serde_json reads them: strictly only for the
    /// object of a declared field's value (`strict_top`), leniently inside
    /// anything it ignores.
    fn skip(&mut self, node: u32, origin: u32, strict_top: bool) -> R<()> {
        let base = self.frames.len();
        loop {
            // A value.
            match self.peek()? {
                c @ (b'{' | b'[') => {
                    let object = c == b'{';
                    self.i += 1;
                    self.frames.push(Frame {
                        object,
                        keys_from: self.keys.len() as u32,
                        at: 0,
                    });
                    let close = if object { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                        self.close_frame(node, origin, base);
                    } else {
                        if object {
                            self.skip_key(strict_top && self.frames.len() == base + 1)?;
                        }
                        continue;
                    }
                }
                b'"' => self.skip_string()?,
                b't' | b'f' => {
                    self.boolean()?;
                }
                b'n' => self.literal(b"null")?,
                _ => self.skip_number()?,
            }
            // After a value: close containers, or go on to the next item.
            loop {
                let Some(top) = self.frames.len().checked_sub(1).filter(|&t| t >= base) else {
                    return Ok(());
                };
                let object = self.frames[top].object;
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if object {
                            self.skip_key(strict_top && top == base)?;
                        } else {
                            self.frames[top].at += 1;
                        }
                        break;
                    }
                    b'}' if object => {
                        self.i += 1;
                        self.close_frame(node, origin, base);
                    }
                    b']' if !object => {
                        self.i += 1;
                        self.close_frame(node, origin, base);
                    }
                    _ => return Err(Syntax),
                }
            }
        }
    }

    /// Reads the next key of the innermost skipped object and its colon;
    /// it becomes the object's current key.
    fn skip_key(&mut self, strict: bool) -> R<()> {
        if self.peek()? != b'"' {
            return Err(Syntax);
        }
        let at = self.i;
        let key = self.text(strict)?;
        self.remember_key(key.bytes(), at);
        self.eat(b':')?;
        let top = self.frames.len() - 1;
        self.frames[top].at = at as u32;
        Ok(())
    }

    /// Closes the innermost skipped container, checking an object's keys.
    fn close_frame(&mut self, node: u32, origin: u32, base: usize) {
        let Some(f) = self.frames.pop() else {
            return;
        };
        if f.object {
            let from = f.keys_from as usize;
            if self.keys.len() - from >= 2 && self.duplicate.is_none() {
                let frames: SmallVec<[Frame; 16]> = self.frames[base..].iter().copied().collect();
                self.check_keys(from, node, origin, &frames);
            }
            self.keys.truncate(from);
        }
    }

    /// A string read as serde_json builds one: escapes decoded, surrogates
    /// paired, UTF-8 checked. The cursor is on the opening quote.
    fn string(&mut self) -> R<Text<'a>> {
        self.text(true)
    }

    /// A string's content; not `strict`, as serde_json reads a key it
    /// ignores: lone surrogates kept as their code units, bytes unchecked.
    fn text(&mut self, strict: bool) -> R<Text<'a>> {
        let b = self.b;
        let start = self.i + 1;
        let mut i = start;
        while i < b.len() && !STRING_STOP[b[i] as usize] {
            i += 1;
        }
        match b.get(i) {
            Some(b'"') => {
                self.i = i + 1;
                let raw = &b[start..i];
                if strict && !raw.is_ascii() && std::str::from_utf8(raw).is_err() {
                    return Err(Syntax);
                }
                Ok(Text::Raw(raw))
            }
            Some(b'\\') => {
                let mut out: SmallVec<[u8; 64]> = SmallVec::from_slice(&b[start..i]);
                self.i = i;
                loop {
                    match b.get(self.i) {
                        Some(b'"') => {
                            self.i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            self.i += 1;
                            self.escape(&mut out, strict)?;
                        }
                        Some(&c) if c >= 0x20 => {
                            out.push(c);
                            self.i += 1;
                        }
                        _ => return Err(Syntax),
                    }
                }
                if strict && std::str::from_utf8(&out).is_err() {
                    return Err(Syntax);
                }
                Ok(Text::Decoded(out))
            }
            _ => Err(Syntax),
        }
    }

    fn hex4(&mut self) -> R<u16> {
        let digits = self.b.get(self.i..self.i + 4).ok_or(Syntax)?;
        let mut n = 0u16;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(Syntax),
            };
            n = (n << 4) | u16::from(v);
        }
        self.i += 4;
        Ok(n)
    }

    /// One escape (after its backslash), decoded into `out`.
    fn escape(&mut self, out: &mut SmallVec<[u8; 64]>, strict: bool) -> R<()> {
        let c = *self.b.get(self.i).ok_or(Syntax)?;
        self.i += 1;
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let n = self.hex4()?;
                if !strict {
                    // WTF-8: every code unit as its three bytes, so that
                    // equal escapes give equal bytes.
                    let n = u32::from(n);
                    if n < 0x80 {
                        out.push(n as u8);
                    } else if n < 0x800 {
                        out.extend_from_slice(&[0xC0 | (n >> 6) as u8, 0x80 | (n & 0x3F) as u8]);
                    } else {
                        out.extend_from_slice(&[
                            0xE0 | (n >> 12) as u8,
                            0x80 | ((n >> 6) & 0x3F) as u8,
                            0x80 | (n & 0x3F) as u8,
                        ]);
                    }
                    return Ok(());
                }
                let code = match n {
                    0xD800..=0xDBFF => {
                        if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                            return Err(Syntax);
                        }
                        self.i += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(Syntax);
                        }
                        0x1_0000 + ((u32::from(n) - 0xD800) << 10) + (u32::from(lo) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(Syntax),
                    n => u32::from(n),
                };
                let ch = char::from_u32(code).ok_or(Syntax)?;
                let mut buf = [0; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            _ => return Err(Syntax),
        };
        out.push(byte);
        Ok(())
    }

    /// Skips a string as serde_json ignores one: control characters and
    /// malformed escapes are errors, the bytes are not otherwise checked.
    fn skip_string(&mut self) -> R<()> {
        let b = self.b;
        self.i += 1;
        loop {
            while self.i < b.len() && !STRING_STOP[b[self.i] as usize] {
                self.i += 1;
            }
            match b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match b.get(self.i) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.i += 1;
                        }
                        Some(b'u') => {
                            self.i += 1;
                            self.hex4()?;
                        }
                        _ => return Err(Syntax),
                    }
                }
                _ => return Err(Syntax),
            }
        }
    }

    /// The extent of a number token as JSON's grammar has it:
    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`. Returns where its
    /// digits, fraction and exponent are.
    fn number_token(&mut self) -> R<NumberToken> {
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while matches!(b.get(i), Some(b'0'..=b'9')) {
                    i += 1;
                }
            }
            _ => return Err(Syntax),
        }
        let int_end = i;
        let mut frac = (i, i);
        if b.get(i) == Some(&b'.') {
            i += 1;
            let f = i;
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
            if i == f {
                return Err(Syntax);
            }
            frac = (f, i);
        }
        let mut exp = None;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            let sign_neg = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let e = i;
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
            if i == e {
                return Err(Syntax);
            }
            exp = Some((sign_neg, e, i));
        }
        // A number runs into nothing but a delimiter (serde_json reads
        // `1x` as a number followed by an unexpected `x`, an error too).
        self.i = i;
        Ok(NumberToken {
            start,
            negative,
            int: (int_start, int_end),
            frac,
            exp,
        })
    }

    fn skip_number(&mut self) -> R<()> {
        self.number_token().map(|_| ())
    }

    /// A number's value, exactly as serde_json computes it: directly when
    /// the digits are few enough for one correctly rounded operation (the
    /// operation serde_json performs too), by serde_json itself otherwise.
    fn number(&mut self) -> R<f64> {
        let t = self.number_token()?;
        let b = self.b;
        let digits = (t.int.1 - t.int.0) + (t.frac.1 - t.frac.0);
        let exp_digits = t.exp.map_or(0, |(_, s, e)| e - s);
        if digits <= 15 && exp_digits <= 2 {
            let mut sig = 0u64;
            for &d in b[t.int.0..t.int.1].iter().chain(&b[t.frac.0..t.frac.1]) {
                sig = sig * 10 + u64::from(d - b'0');
            }
            let mut e = -((t.frac.1 - t.frac.0) as i32);
            if let Some((neg, s, end)) = t.exp {
                let mut x = 0i32;
                for &d in &b[s..end] {
                    x = x * 10 + i32::from(d - b'0');
                }
                e += if neg { -x } else { x };
            }
            if (-22..=22).contains(&e) {
                let mut f = sig as f64;
                if e >= 0 {
                    f *= POW10[e as usize];
                } else {
                    f /= POW10[(-e) as usize];
                }
                return Ok(if t.negative { -f } else { f });
            }
        }
        serde_json::from_slice::<f64>(&b[t.start..self.i]).map_err(|_| Syntax)
    }
}

struct NumberToken {
    start: usize,
    negative: bool,
    int: (usize, usize),
    frac: (usize, usize),
    exp: Option<(bool, usize, usize)>,
}

/// An RFC 3339 timestamp in milliseconds: the common exact form
/// (`2026-11-24T08:15:30.250Z`, or with a `±HH:MM` offset) read directly,
/// any other form by [`parse_rfc3339_ms`], whose messages are the
/// rejection's.
fn timestamp(s: &str) -> Result<i64, String> {
    fast_timestamp(s.as_bytes()).map_or_else(|| parse_rfc3339_ms(s), Ok)
}

fn fast_timestamp(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        let mut n = 0i64;
        for &d in b {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(d - b'0');
        }
        Some(n)
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, s) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        // Milliseconds are the first three digits, as chrono truncates.
        let mut first3 = [b'0'; 3];
        for (k, &dgt) in b[start..i].iter().take(3).enumerate() {
            first3[k] = dgt;
        }
        ms = num(&first3)?;
    }
    let offset_min = match &b[i..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (num(&[*h1, *h2])?, num(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 60 + om;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] {
        return None;
    }
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    Some(secs * 1000 + ms)
}

#[cfg(test)]
mod tests {
    //! The fast reader against serde_json's reading of the same bytes, on
    //! random JSON-like text: the same values, the same rejections word for
    //! word, except that only the fast reader finds repeated keys.

    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    fn parser() -> EventParser {
        let schema = Schema::parse(
            "[fields]\nuser_id = { type = \"string\", required = true }\namount = \"number\"\n\
             vip = \"bool\"\nopened_at = \"timestamp\"\n\"attributes.channel\" = \"string\"\n\
             \"attributes.term_months\" = \"number\"\n\"attributes.deep.er\" = \"number\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        EventParser::new(Arc::new(schema))
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "0",
                "-0",
                "1",
                "-5",
                "4200",
                "1.5",
                "-0.0",
                "1e5",
                "1E+2",
                "2.5e-3",
                "01",
                "1.",
                "-",
                ".5",
                "1e400",
                "-1e400",
                "12345678901234567890",
                "123456789012345678",
                "0.1e-30",
                "9007199254740993",
                "1764000000000",
                "1.7e12",
                "true",
                "false",
                "null",
                "nul",
                "tru",
                "\"\"",
                "\"app\"",
                "\"e-1\"",
                "\"\\u00e9t\\u00E9\"",
                "\"\\ud83d\\ude00\"",
                "\"\\ud800\"",
                "\"\\udc00x\"",
                "\"a\\tb\\n\"",
                "\"\\x\"",
                "\"2026-11-24T08:15:30.250Z\"",
                "\"2026-11-24T16:15:30+08:00\"",
                "\"2024-02-29T00:00:00Z\"",
                "\"2023-02-29T00:00:00Z\"",
                "\"2026-11-24T08:15:60Z\"",
                "\"2026-11-24t08:15:30Z\"",
                "\"2026-11-24T08:15:30.123456789Z\"",
                "\"2026-11-24T08:15:30.1234567891Z\"",
                "\"0000-01-01T00:00:00Z\"",
                "\"9999-12-31T23:59:59.999-23:59\"",
                "\"yesterday\"",
                "\"a very long string value that is much longer than forty bytes\"",
            ])
            .prop_map(String::from),
            any::<f64>().prop_map(|f| f.to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "event_id",
            "event_type",
            "timestamp",
            "user_id",
            "amount",
            "vip",
            "opened_at",
            "attributes",
            "channel",
            "term_months",
            "deep",
            "er",
            "x",
            "y",
            "am\\u006funt",
            "\\u0078",
            "",
        ])
        .prop_map(|k| format!("\"{k}\""))
    }

    fn json() -> impl Strategy<Value = String> {
        scalar().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..6).prop_map(|kv| {
                    let members: Vec<String> =
                        kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    /// An event-shaped object with random extra members.
    fn event() -> impl Strategy<Value = String> {
        (prop::collection::vec((key(), json()), 0..6), any::<bool>()).prop_map(|(extra, base)| {
            let mut members: Vec<String> = if base {
                vec![
                    r#""event_id":"e-1""#.into(),
                    r#""event_type":"t""#.into(),
                    r#""timestamp":"2026-11-24T08:15:30.250Z""#.into(),
                    r#""user_id":"u""#.into(),
                ]
            } else {
                Vec::new()
            };
            members.extend(extra.into_iter().map(|(k, v)| format!("{k}:{v}")));
            format!("{{{}}}", members.join(","))
        })
    }

    /// Random text, now and then cut short or with a byte changed.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![3 => event(), 1 => json()],
            any::<u16>(),
            any::<u8>(),
            0u8..4,
        )
            .prop_map(|(text, at, byte, how)| {
                let mut b = text.into_bytes();
                let at = usize::from(at) % (b.len() + 1);
                match how {
                    0 => b.truncate(at),
                    1 if at < b.len() => b[at] = byte,
                    2 => b.insert(at, byte),
                    _ => {}
                }
                b
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4_000))]

        #[test]
        fn the_fast_reader_agrees_with_serde_json(b in bytes()) {
            let p = parser();
            let fast = p.parse(&b).map(|e| e.values.into_vec());
            let reference = serde_reader::read(p.schema(), &b);
            match (&fast, &reference) {
                (Err(Rejection::DuplicateKey { .. }), Err(Rejection::NotJson { .. })) => {
                    prop_assert!(false, "{}: serde_json refuses it, the fast reader finds a duplicate", String::from_utf8_lossy(&b));
                }
                (Err(Rejection::DuplicateKey { .. }), _) => {}
                _ => prop_assert_eq!(&fast, &reference, "{}", String::from_utf8_lossy(&b)),
            }
        }
    }

    #[test]
    fn timestamps_read_directly_agree_with_chrono() {
        let mut ms = -62_167_219_200_000i64;
        while ms <= MAX_EPOCH_MS {
            for text in [
                crate::time::format_rfc3339_ms(ms),
                crate::time::format_rfc3339_ms(ms).replace('Z', "+05:30"),
                crate::time::format_rfc3339_ms(ms).replace('Z', "-23:59"),
                crate::time::format_rfc3339_ms(ms)
                    .replace(".", ".9")
                    .replace('Z', "1Z"),
            ] {
                assert_eq!(
                    fast_timestamp(text.as_bytes()).map(Ok),
                    Some(parse_rfc3339_ms(&text)),
                    "{text}"
                );
            }
            ms += 3_333_333_333;
        }
    }
}
