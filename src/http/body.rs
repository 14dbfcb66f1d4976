//! Request bodies as deliveries: CSV as it is; JSON (one object or an array of objects) and
//! NDJSON (one object a line) rendered as CSV whose columns are the objects' keys (so the
//! aliases and rules of files apply), with each object on the CSV line after the body line or
//! array position it had: the validator reports positions in the body's own terms.
//!
//! A large body (spooled to a file) is rendered by [`render_file`] in two streaming passes, the
//! keys and then the rows, into a CSV file: memory holds one object at a time, whatever the
//! body's size. Both paths read objects through one walker (a byte order mark skipped, a body
//! without objects refused) and write rows through one renderer, so a body gets the same
//! rendering or the same refusal whether it was held in memory or spooled.

use std::io::{BufRead, Write};
use std::path::Path;

use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::delivery::ByteSource;
use crate::http::error::ApiError;
use crate::validate::rejection::RejectionCode;

/// The body formats the ingest endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `text/csv`: any layout of a file.
    Csv,
    /// `application/json`: an object or an array of objects.
    Json,
    /// `application/x-ndjson`: one object a line.
    Ndjson,
}

impl BodyFormat {
    /// The format of a `Content-Type` (parameters such as `charset` ignored).
    ///
    /// # Errors
    /// 415 for any other type.
    pub fn of(content_type: Option<&str>) -> Result<Self, ApiError> {
        let essence = content_type
            .and_then(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some("text/csv") => Ok(BodyFormat::Csv),
            Some("application/json") => Ok(BodyFormat::Json),
            Some("application/x-ndjson" | "application/ndjson") => Ok(BodyFormat::Ndjson),
            other => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Content-Type `{}` is not taken: send text/csv, application/json or \
                     application/x-ndjson",
                    other.unwrap_or("(none)")
                ),
            )),
        }
    }
}

/// The delivery's bytes for a body of `format`: CSV as it is, JSON and NDJSON rendered as CSV
/// in memory. The same body spooled to a file ([`render_file`]) is read by the same walker and
/// rendered alike, so a body gets the same answer whatever its size.
///
/// # Errors
/// 400 when a JSON body does not parse or is not made of flat objects; 422 when it holds no
/// object.
pub fn to_source(format: BodyFormat, body: Bytes) -> Result<ByteSource, ApiError> {
    if format == BodyFormat::Csv {
        return Ok(ByteSource::Memory(body));
    }
    let mut objects = Vec::new();
    for_each_object(format, &body[..], &mut |line, map| {
        objects.push((line, map));
        Ok(())
    })?;
    if objects.is_empty() {
        return Err(no_objects());
    }
    render_within(&objects, rows_budget(body.len() as u64)).map(|bytes| ByteSource::Rendered {
        bytes,
        line_shift: 1,
    })
}

fn no_objects() -> ApiError {
    ApiError::refused(
        RejectionCode::NoObjects,
        "the body holds no objects: nothing to load",
    )
}

/// One element: a flat object, with the line or position it came from.
fn object(element: Element, line: u64) -> Result<(u64, Map<String, Value>), ApiError> {
    match element {
        Element::Object(map) => Ok((line, map)),
        Element::KeyTwice(key) => Err(ApiError::refused(
            RejectionCode::DuplicateColumn,
            format!(
                "element {line} names `{key}` more than once: one of the two values would go \
                 unread"
            ),
        )),
        Element::TooManyKeys => Err(bad_request(format!(
            "element {line} has more than {MAX_KEYS} keys"
        ))),
        Element::Other(kind) => Err(bad_request(format!(
            "element {line} is {kind}, not an object of fields"
        ))),
    }
}

/// Keys of one object, and distinct keys of all the objects of a body, at most.
pub const MAX_KEYS: usize = 1_000;

/// A JSON element as read: an object with each key once, or why it is not one. Reading every
/// key as it comes (not into a map that keeps the last) sees a key named twice.
enum Element {
    Object(Map<String, Value>),
    KeyTwice(String),
    TooManyKeys,
    Other(&'static str),
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of fields")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
        let mut fields = Map::new();
        let mut problem = None;
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            if problem.is_some() {
                continue;
            }
            if fields.len() >= MAX_KEYS {
                problem = Some(Element::TooManyKeys);
            } else if fields.contains_key(&key) {
                problem = Some(Element::KeyTwice(key));
            } else {
                fields.insert(key, value);
            }
        }
        Ok(problem.unwrap_or(Element::Object(fields)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Element::Other("an array"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Element, E> {
        Ok(Element::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Element, E> {
        Ok(Element::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Element, E> {
        Ok(Element::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Element, E> {
        Ok(Element::Other("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Element, E> {
        Ok(Element::Other("a string"))
    }
    fn visit_unit<E>(self) -> Result<Element, E> {
        Ok(Element::Other("null"))
    }
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ElementVisitor)
    }
}

/// CSV with the union of the keys as header (each object's keys in name order, new ones
/// appended: columns are matched by name, so the order carries nothing); the object at body
/// line `n` on CSV line `n + 1`.
pub(crate) fn render(objects: &[(u64, Map<String, Value>)]) -> Result<Bytes, ApiError> {
    render_within(objects, u64::MAX)
}

/// [`render`], the rows at most `budget` bytes.
fn render_within(objects: &[(u64, Map<String, Value>)], budget: u64) -> Result<Bytes, ApiError> {
    let mut columns = Columns::default();
    for (line, map) in objects {
        columns.add(*line, map)?;
    }
    let mut rows = Rows::new(&columns.names, budget);
    let mut out = rows.header()?.to_vec();
    for (line, map) in objects {
        out.extend_from_slice(rows.object(*line, map)?);
    }
    Ok(Bytes::from(out))
}

/// The union of the objects' keys, in the order they first appear.
#[derive(Default)]
struct Columns {
    names: Vec<String>,
    seen: std::collections::HashSet<String>,
}

impl Columns {
    /// Adds the keys of the object at `line`.
    ///
    /// # Errors
    /// 400 when they bring the body's distinct keys past [`MAX_KEYS`]: the objects are rows
    /// of one table, and keys that differ from object to object would make the rendering
    /// grow with the square of the body.
    fn add(&mut self, line: u64, map: &Map<String, Value>) -> Result<(), ApiError> {
        for key in map.keys() {
            if !self.seen.contains(key) {
                if self.names.len() >= MAX_KEYS {
                    return Err(bad_request(format!(
                        "element {line} brings the body's distinct keys past {MAX_KEYS}: the \
                         objects of a body are rows of one table and share their keys"
                    )));
                }
                self.seen.insert(key.clone());
                self.names.push(key.clone());
            }
        }
        Ok(())
    }
}

/// The CSV rows of objects under a header of `columns`, each object on the CSV line after its
/// body line (blank lines keep the numbering).
struct Rows<'c> {
    columns: &'c [String],
    next_line: u64,
    row: Vec<u8>,
    /// Bytes of rows still allowed (`rows_budget`).
    budget: u64,
}

impl<'c> Rows<'c> {
    fn new(columns: &'c [String], budget: u64) -> Self {
        Self {
            columns,
            next_line: 1,
            row: Vec::new(),
            budget,
        }
    }

    /// The header line.
    fn header(&mut self) -> Result<&[u8], ApiError> {
        self.row.clear();
        write_row(&mut self.row, &header_of(self.columns))?;
        Ok(&self.row)
    }

    /// The lines up to and including the object at body line `line`.
    fn object(&mut self, line: u64, map: &Map<String, Value>) -> Result<&[u8], ApiError> {
        self.row.clear();
        while self.next_line < line {
            self.row.push(b'\n');
            self.next_line += 1;
        }
        write_row(&mut self.row, &fields_of(line, map, self.columns)?)?;
        self.next_line += 1;
        self.budget = self
            .budget
            .checked_sub(self.row.len() as u64)
            .ok_or_else(|| {
                bad_request(format!(
                    "element {line}: the objects leave most of the body's {} keys out, and as \
                     CSV rows they would pass {RENDERING_RATIO} times the body's size; the \
                     objects of a body are rows of one table and share their keys",
                    self.columns.len()
                ))
            })?;
        Ok(&self.row)
    }
}

/// The rows rendered from a body are at most this many times its size (plus
/// [`RENDERING_FLOOR`]). Objects that share their keys render smaller than their JSON; objects
/// that each leave most of the body's keys out render a field for every key, up to
/// [`MAX_KEYS`] times more than they are.
const RENDERING_RATIO: u64 = 4;

/// Bytes of rows any body may render to, whatever its size.
const RENDERING_FLOOR: u64 = 64 * 1024;

/// The bytes of rows a body of `body_bytes` may render to.
fn rows_budget(body_bytes: u64) -> u64 {
    body_bytes
        .saturating_mul(RENDERING_RATIO)
        .saturating_add(RENDERING_FLOOR)
}

/// The CSV header for these keys: a line break or other control character in a key becomes a
/// space (a key is a column name; it must not end the header line).
fn header_of<S: AsRef<str>>(columns: &[S]) -> Vec<String> {
    columns
        .iter()
        .map(|c| {
            c.as_ref()
                .chars()
                .map(|ch| if ch.is_control() { ' ' } else { ch })
                .collect()
        })
        .collect()
}

/// Without a UTF-8 byte order mark, which some clients put before a JSON body.
pub fn without_bom(body: Bytes) -> Bytes {
    match body.strip_prefix(BOM) {
        Some(rest) => body.slice(body.len() - rest.len()..),
        None => body,
    }
}

/// An object's fields in column order.
fn fields_of<S: AsRef<str>>(
    line: u64,
    map: &Map<String, Value>,
    columns: &[S],
) -> Result<Vec<String>, ApiError> {
    let mut fields = Vec::with_capacity(columns.len());
    for column in columns {
        let column = column.as_ref();
        fields.push(match map.get(column) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(Value::Number(number)) => number.to_string(),
            Some(other) => {
                return Err(bad_request(format!(
                    "element {line}: field `{column}` is {}; only numbers and strings are taken",
                    kind(other)
                )))
            }
        });
    }
    Ok(fields)
}

/// Renders a large JSON or NDJSON body held in the file `body` as a CSV file in `dir` (see the
/// module header), exactly as [`to_source`] renders a small one. Blocking: call from a blocking
/// thread.
///
/// # Errors
/// 400 when the body does not parse or is not made of flat objects; 422 when it holds no
/// object; 503 when the rendering cannot be written.
pub fn render_file(
    format: BodyFormat,
    body: &Path,
    dir: &Path,
) -> Result<(tempfile::TempPath, ByteSource), ApiError> {
    let mut columns = Columns::default();
    let mut objects = 0u64;
    for_each_object(format, open_spooled(body)?, &mut |line, map| {
        objects += 1;
        columns.add(line, &map)
    })?;
    if objects == 0 {
        return Err(no_objects());
    }
    let unwritable = |e: std::io::Error| {
        ApiError::unavailable(
            "spool_unavailable",
            format!("the body could not be rendered to disk ({e}); nothing was stored"),
            30,
        )
    };
    let named = tempfile::Builder::new()
        .prefix("rendered-")
        .suffix(".csv")
        .tempfile_in(dir)
        .map_err(unwritable)?;
    let (file, path) = named.into_parts();
    let mut out = std::io::BufWriter::new(file);
    let body_bytes = std::fs::metadata(body).map_err(spool_unreadable)?.len();
    let mut rows = Rows::new(&columns.names, rows_budget(body_bytes));
    out.write_all(rows.header()?).map_err(unwritable)?;
    for_each_object(format, open_spooled(body)?, &mut |line, map| {
        out.write_all(rows.object(line, &map)?).map_err(unwritable)
    })?;
    out.flush().map_err(unwritable)?;
    let source = ByteSource::RenderedFile {
        path: path.to_path_buf(),
        line_shift: 1,
    };
    Ok((path, source))
}

fn open_spooled(body: &Path) -> Result<std::io::BufReader<std::fs::File>, ApiError> {
    let file = std::fs::File::open(body).map_err(spool_unreadable)?;
    Ok(std::io::BufReader::new(file))
}

fn spool_unreadable(error: std::io::Error) -> ApiError {
    ApiError::unavailable(
        "spool_unavailable",
        format!("the spooled body could not be read ({error}); nothing was stored"),
        30,
    )
}

/// The UTF-8 byte order mark some clients put before a body.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Calls `each` with every object of a JSON (an object or an array of them) or NDJSON body,
/// after any byte order mark, and its line (NDJSON) or position (JSON), one object in memory
/// at a time. The one reading of both paths, in memory and from a spool file, with the same
/// parser (serde_json's parser of slices places some errors a column before its parser of
/// readers).
fn for_each_object(
    format: BodyFormat,
    mut reader: impl BufRead,
    each: &mut dyn FnMut(u64, Map<String, Value>) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    if reader.fill_buf().map_err(unreadable)?.starts_with(BOM) {
        reader.consume(BOM.len());
    }
    match format {
        BodyFormat::Ndjson => each_line(reader, each),
        _ => each_element(reader, each),
    }
}

fn unreadable(error: std::io::Error) -> ApiError {
    bad_request(format!("the body could not be read: {error}"))
}

/// The objects of an NDJSON body, one a line; blank lines skipped but counted.
fn each_line(
    mut reader: impl BufRead,
    each: &mut dyn FnMut(u64, Map<String, Value>) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(unreadable)? == 0 {
            return Ok(());
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let element = serde_json::from_slice(&line)
            .map_err(|e| bad_request(format!("line {number}: not a JSON object ({e})")))?;
        let (at, map) = object(element, number)?;
        each(at, map)?;
    }
}

/// The objects of a JSON body: an array's elements, or the one object.
fn each_element(
    reader: impl std::io::Read,
    each: &mut dyn FnMut(u64, Map<String, Value>) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let mut failure = None;
    let walked = deserializer.deserialize_any(Objects {
        each,
        failure: &mut failure,
    });
    if let Some(error) = failure {
        return Err(error);
    }
    walked.and_then(|()| deserializer.end()).map_err(malformed)
}

/// Visits a JSON body's objects one by one (an array's elements, or the one object); a body
/// that is one other value is refused as an element that is not an object.
struct Objects<'a> {
    each: &'a mut dyn FnMut(u64, Map<String, Value>) -> Result<(), ApiError>,
    /// The first refusal of `each` (a serde error carries only text).
    failure: &'a mut Option<ApiError>,
}

impl Objects<'_> {
    fn take<E: serde::de::Error>(&mut self, element: Element, position: u64) -> Result<(), E> {
        let taken = object(element, position).and_then(|(at, map)| (self.each)(at, map));
        taken.map_err(|error| {
            *self.failure = Some(error);
            E::custom("refused")
        })
    }
}

impl<'de> Visitor<'de> for Objects<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object or an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut position = 0;
        while let Some(element) = seq.next_element::<Element>()? {
            position += 1;
            self.take(element, position)?;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<(), A::Error> {
        let element = ElementVisitor.visit_map(map)?;
        self.take(element, 1)
    }

    fn visit_bool<E: serde::de::Error>(mut self, _: bool) -> Result<(), E> {
        self.take(Element::Other("a boolean"), 1)
    }

    fn visit_i64<E: serde::de::Error>(mut self, _: i64) -> Result<(), E> {
        self.take(Element::Other("a number"), 1)
    }

    fn visit_u64<E: serde::de::Error>(mut self, _: u64) -> Result<(), E> {
        self.take(Element::Other("a number"), 1)
    }

    fn visit_f64<E: serde::de::Error>(mut self, _: f64) -> Result<(), E> {
        self.take(Element::Other("a number"), 1)
    }

    fn visit_str<E: serde::de::Error>(mut self, _: &str) -> Result<(), E> {
        self.take(Element::Other("a string"), 1)
    }

    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.take(Element::Other("null"), 1)
    }
}

/// Appends one CSV record (quoted where needed) and its line end.
fn write_row<S: AsRef<[u8]>>(out: &mut Vec<u8>, fields: &[S]) -> Result<(), ApiError> {
    let mut writer = csv::Writer::from_writer(out);
    writer
        .write_record(fields)
        .and_then(|()| writer.flush().map_err(csv::Error::from))
        .map_err(|e| bad_request(format!("cannot render the body: {e}")))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn malformed(error: serde_json::Error) -> ApiError {
    bad_request(format!("the body is not valid JSON: {error}"))
}

fn bad_request(message: String) -> ApiError {
    ApiError::refused(RejectionCode::MalformedBody, message)
}

#[cfg(test)]
mod tests;
