//! [`Config`]: every tunable and every bound of the core.

/// The core's configuration. Every table the core keeps has its bound here.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Contacts per bucket (Kademlia's k), also the default size of a
    /// closest-nodes answer. Default 20.
    pub k: usize,
    /// Pending nodes kept per bucket while it is full, waiting for garbage
    /// collection to make room. The oldest pending entry is dropped (and
    /// counted) when the list is full. Default 20.
    pub max_pending_per_bucket: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            k: 20,
            max_pending_per_bucket: 20,
        }
    }
}

/// A [`Config`] value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value outside its allowed range.
    #[error("config field `{field}` is {value}, allowed {min}..={max}")]
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
    },
}

impl Config {
    /// The largest k accepted: larger buckets make every scan linear in a big k.
    pub const MAX_K: usize = 1024;
    /// The largest pending list accepted per bucket.
    pub const MAX_PENDING_PER_BUCKET: usize = 1024;

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("k", self.k, 1, Self::MAX_K)?;
        check_range(
            "max_pending_per_bucket",
            self.max_pending_per_bucket,
            0,
            Self::MAX_PENDING_PER_BUCKET,
        )
    }
}

fn check_range(
    field: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value: value as u64,
            min: min as u64,
            max: max as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_k_is_not() {
        assert_eq!(Config::default().validate(), Ok(()));
        let config = Config {
            k: 0,
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::OutOfRange { field: "k", .. })
        ));
    }
}
