//! The one error type of the reporting side of loadgen.
//!
//! Recording never fails (a histogram saturates rather than erring); only reading and
//! writing the run's files, and drawing its charts, can. Every variant names the file it
//! concerns so that a message printed by the driver is enough to act on.

use std::io;
use std::path::PathBuf;

/// Why reading or writing a run's output failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file system refused a read or a write.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A file exists but does not hold what its format promises (summary, timeline,
    /// interval log, history).
    #[error("{}: {message}", path.display())]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong, in words.
        message: String,
    },
    /// Drawing a chart of `report.html` failed.
    #[error("chart {chart}: {message}")]
    Chart {
        /// The chart's title.
        chart: String,
        /// The drawing backend's error.
        message: String,
    },
}

impl ReportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
