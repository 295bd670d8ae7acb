//! The one error type of `verdict-backtest`.

/// What went wrong setting up or finishing a backtest report. Each message
/// says what was wrong, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The report's options contradict themselves.
    #[error("backtest options: {0}")]
    Options(String),
    /// The label field was found in none of the events compared: most
    /// likely a misspelt name.
    #[error(
        "label field `{field}`: found in none of the {events} events compared{hint}; name a field the events carry (the generator's is `label`)"
    )]
    LabelNotFound {
        field: String,
        events: u64,
        /// ` (did you mean `label`?)`, or the fields of the first event.
        hint: String,
    },
    /// The label field holds something that is not a label.
    #[error(
        "label field `{field}` of event `{event_id}` is {found}; a label is a string, a number or a bool"
    )]
    LabelValue {
        field: String,
        event_id: String,
        found: &'static str,
    },
    /// An event's bytes are not a JSON object (the label is read from them).
    #[error("event `{event_id}`: not a JSON object ({reason})")]
    EventJson { event_id: String, reason: String },
    /// The chargeback file could not be read.
    #[error("chargebacks {path}: {source}")]
    ChargebacksIo {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The chargeback file is not CSV or Parquet with an `event_id` column.
    #[error("chargebacks {path}: {reason}")]
    Chargebacks { path: String, reason: String },
}
