//! Why a delivery is rejected as a whole: a stable [`RejectionCode`] and a sentence for people.
//! The ledger keeps it as `code: message` (`v_files.error`); the HTTP edge answers 400 for a
//! delivery that cannot be read as its type and 422 for one that holds nothing loadable,
//! deciding by the code ([`RejectionCode::nothing_loadable`]), never by its spelling.

use std::fmt;

/// The stable codes of whole-delivery rejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionCode {
    /// Nothing in the file.
    EmptyFile,
    /// No line break in the first 64 KiB: not a CSV file.
    NotText,
    /// The header lacks a required column.
    MissingColumn,
    /// Two columns (or a JSON key given twice, or two names of one column) for one value.
    DuplicateColumn,
    /// A sensor type that is not in the catalogue.
    UnknownSensorType,
    /// A header that matches no layout.
    UnsupportedLayout,
    /// Every row was rejected.
    NoValidRows,
    /// More rows rejected than `max_reject_ratio` allows.
    TooManyRejects,
    /// The file kept failing and was set aside.
    PoisonFile,
    /// The same bytes as a delivery rejected earlier.
    DuplicateOfRejected,
    /// A request body that is not valid as its content type (JSON, NDJSON).
    MalformedBody,
    /// A JSON body with no objects (`[]`).
    NoObjects,
    /// A device body with no values.
    NoValues,
    /// A device push whose device cannot be told (`X-Sensor`, `esp8266id`).
    UnknownDevice,
    /// A push-API body with a pin no sensor has.
    UnknownPin,
}

impl RejectionCode {
    const ALL: [RejectionCode; 15] = [
        RejectionCode::EmptyFile,
        RejectionCode::NotText,
        RejectionCode::MissingColumn,
        RejectionCode::DuplicateColumn,
        RejectionCode::UnknownSensorType,
        RejectionCode::UnsupportedLayout,
        RejectionCode::NoValidRows,
        RejectionCode::TooManyRejects,
        RejectionCode::PoisonFile,
        RejectionCode::DuplicateOfRejected,
        RejectionCode::MalformedBody,
        RejectionCode::NoObjects,
        RejectionCode::NoValues,
        RejectionCode::UnknownDevice,
        RejectionCode::UnknownPin,
    ];

    /// The code as written in the ledger, the logs and error answers.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectionCode::EmptyFile => "empty_file",
            RejectionCode::NotText => "not_text",
            RejectionCode::MissingColumn => "missing_column",
            RejectionCode::DuplicateColumn => "duplicate_column",
            RejectionCode::UnknownSensorType => "unknown_sensor_type",
            RejectionCode::UnsupportedLayout => "unsupported_layout",
            RejectionCode::NoValidRows => "no_valid_rows",
            RejectionCode::TooManyRejects => "too_many_rejects",
            RejectionCode::PoisonFile => "poison_file",
            RejectionCode::DuplicateOfRejected => "duplicate_of_rejected",
            RejectionCode::MalformedBody => "malformed_body",
            RejectionCode::NoObjects => "no_objects",
            RejectionCode::NoValues => "no_values",
            RejectionCode::UnknownDevice => "unknown_device",
            RejectionCode::UnknownPin => "unknown_pin",
        }
    }

    /// The code written as `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == text)
    }

    /// Whether the delivery could be read as its type but held nothing loadable (HTTP 422),
    /// rather than not being readable as its type (HTTP 400).
    pub const fn nothing_loadable(self) -> bool {
        matches!(
            self,
            RejectionCode::NoValidRows
                | RejectionCode::TooManyRejects
                | RejectionCode::NoObjects
                | RejectionCode::NoValues
        )
    }
}

impl fmt::Display for RejectionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a delivery cannot be processed at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRejection {
    /// The stable code.
    pub code: RejectionCode,
    /// Explanation.
    pub message: String,
}

impl FileRejection {
    /// A rejection with a code and a message.
    pub fn new(code: RejectionCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A rejection as the ledger keeps it (`code: message`), if it is one.
    pub fn parse(stored: &str) -> Option<Self> {
        let (code, message) = stored.split_once(": ")?;
        Some(Self::new(RejectionCode::parse(code)?, message))
    }
}

impl fmt::Display for FileRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Written as the ledger keeps it: `code: message`.
impl serde::Serialize for FileRejection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_only_nothing_loadable_is_422() {
        for code in RejectionCode::ALL {
            assert_eq!(RejectionCode::parse(code.as_str()), Some(code));
            let stored = FileRejection::new(code, "why: and more").to_string();
            assert_eq!(FileRejection::parse(&stored).map(|r| r.code), Some(code));
        }
        assert_eq!(RejectionCode::parse("nonsense"), None);
        let loadable: Vec<_> = RejectionCode::ALL
            .into_iter()
            .filter(|c| c.nothing_loadable())
            .map(RejectionCode::as_str)
            .collect();
        assert_eq!(
            loadable,
            [
                "no_valid_rows",
                "too_many_rejects",
                "no_objects",
                "no_values"
            ]
        );
    }
}
