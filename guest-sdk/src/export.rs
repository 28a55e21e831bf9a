//! From plain functions to the WIT exports: the `transform!`, `transform_raw!` and
//! `destination!` macros, the glue they call, and what a module declares at start
//! ([`ConfigKey`], an `init` function) for the `lifecycle` export.

use crate::{wit_types, Batch, Change, Error, RawBatch, Rejection, Result, Transformed};

/// A configuration key a module takes, declared to the host (`keys = …` of the macros).
/// With keys declared, the host refuses a key not among them and a required key not given,
/// before it reads any row, and `host check` lists them.
///
/// ```
/// use tidemark_sdk::ConfigKey;
///
/// const KEYS: &[ConfigKey] = &[
///     ConfigKey::required("list_id", "the audience rows are synced into"),
///     ConfigKey::required("api_key", "Mailchimp API key, ending in the data center").secret(),
///     ConfigKey::optional("status", "status of new members (default subscribed)"),
/// ];
/// # assert!(KEYS[1].secret);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: &'static str,
    /// One line for `host check`.
    pub description: &'static str,
    pub required: bool,
    /// A credential: given with `--secret`, masked by the host.
    pub secret: bool,
}

impl ConfigKey {
    pub const fn optional(name: &'static str, description: &'static str) -> Self {
        ConfigKey {
            name,
            description,
            required: false,
            secret: false,
        }
    }

    pub const fn required(name: &'static str, description: &'static str) -> Self {
        ConfigKey {
            required: true,
            ..Self::optional(name, description)
        }
    }

    /// The same key, as a secret.
    pub const fn secret(self) -> Self {
        ConfigKey {
            secret: true,
            ..self
        }
    }
}

/// What a transform function may return: the rows to pass on (`Vec<Change>`, or JSON array
/// text for [`crate::transform_raw!`]), or a [`Transformed`] with rejections too.
pub trait TransformOutput {
    fn into_transformed(self) -> Result<Transformed<String>>;
}

impl TransformOutput for Vec<Change> {
    fn into_transformed(self) -> Result<Transformed<String>> {
        Ok(Transformed::raw(serde_json::to_string(&self)?))
    }
}

impl TransformOutput for String {
    fn into_transformed(self) -> Result<Transformed<String>> {
        Ok(Transformed::raw(self))
    }
}

impl TransformOutput for Transformed<Vec<Change>> {
    fn into_transformed(self) -> Result<Transformed<String>> {
        Ok(Transformed {
            rows: serde_json::to_string(&self.rows)?,
            rejections: self.rejections,
        })
    }
}

impl TransformOutput for Transformed<String> {
    fn into_transformed(self) -> Result<Transformed<String>> {
        Ok(self)
    }
}

impl From<Error> for wit_types::ProcessorError {
    fn from(error: Error) -> Self {
        match error {
            Error::RetryLater { message, after } => {
                wit_types::ProcessorError::RetryLater(wit_types::Retry {
                    message,
                    after_ms: after
                        .map(|after| u64::try_from(after.as_millis()).unwrap_or(u64::MAX)),
                })
            }
            Error::Fatal(message) => wit_types::ProcessorError::Fatal(message),
        }
    }
}

fn to_wit(rejections: Vec<Rejection>) -> Vec<wit_types::Rejection> {
    rejections
        .into_iter()
        .map(|r| wit_types::Rejection {
            index: r.index,
            reason: r.reason,
        })
        .collect()
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use crate::destination::exports::tidemark::processor::deliverer::Guest as DestinationGuest;
    pub use crate::destination::exports::tidemark::processor::lifecycle::Guest as DestinationLifecycle;
    pub use crate::transform::exports::tidemark::processor::lifecycle::Guest as TransformLifecycle;
    pub use crate::transform::exports::tidemark::processor::transformer::Guest as TransformGuest;
    pub use wit_types::{
        Batch as WitBatch, ConfigKey as WitConfigKey, ProcessorError as WitError,
        Rejection as WitRejection, Transformed as WitTransformed,
    };

    /// The keys a module declares, as the WIT answer (`None`: declares nothing).
    pub fn declare(keys: Option<&[ConfigKey]>) -> Option<Vec<WitConfigKey>> {
        keys.map(|keys| {
            keys.iter()
                .map(|key| WitConfigKey {
                    name: key.name.to_owned(),
                    description: key.description.to_owned(),
                    required: key.required,
                    secret: key.secret,
                })
                .collect()
        })
    }

    pub fn run_init(init: fn() -> Result<()>) -> std::result::Result<(), String> {
        init().map_err(|err| err.message().to_owned())
    }

    /// The `init` of a module that gives none.
    pub fn no_init() -> Result<()> {
        Ok(())
    }

    pub fn run_transform<T: TransformOutput>(
        batch: WitBatch,
        transform: fn(Batch) -> Result<T>,
    ) -> std::result::Result<WitTransformed, WitError> {
        let batch = Batch::from_wit(batch)?;
        answer(transform(batch))
    }

    pub fn run_transform_raw<T: TransformOutput>(
        batch: WitBatch,
        transform: fn(RawBatch) -> Result<T>,
    ) -> std::result::Result<WitTransformed, WitError> {
        answer(transform(RawBatch {
            id: batch.id,
            pipeline: batch.pipeline,
            rows: batch.rows,
        }))
    }

    fn answer<T: TransformOutput>(
        output: Result<T>,
    ) -> std::result::Result<WitTransformed, WitError> {
        let transformed = output?.into_transformed()?;
        Ok(WitTransformed {
            rows: transformed.rows,
            rejections: to_wit(transformed.rejections),
        })
    }

    pub fn run_destination(
        batch: WitBatch,
        deliver: fn(Batch) -> Result<Vec<Rejection>>,
    ) -> std::result::Result<Vec<WitRejection>, WitError> {
        let batch = Batch::from_wit(batch)?;
        Ok(to_wit(deliver(batch)?))
    }
}

/// Exports a function as this component's transform.
///
/// The function takes a [`Batch`] and returns `Result<Vec<Change>>` (the rows to pass on) or
/// `Result<Transformed>` (rows and rejections). After it, optionally:
///
/// - `keys = KEYS`: the configuration keys the module takes (`&[ConfigKey]`); without it the
///   module declares nothing and the host accepts any key;
/// - `init = check`: a `fn() -> Result<()>` the host calls once before it reads any row, to
///   check the configuration; its error stops the run at start (exit 2) with its message.
///
/// ```no_run
/// # use tidemark_sdk::{Batch, Change, ConfigKey, Result};
/// # fn drop_free(batch: Batch) -> Result<Vec<Change>> { Ok(batch.changes) }
/// const KEYS: &[ConfigKey] = &[ConfigKey::required("plan", "the plan to drop")];
///
/// fn check() -> Result<()> {
///     match tidemark_sdk::require_config("plan")?.as_str() {
///         "free" | "trial" => Ok(()),
///         other => Err(format!("plan {other:?} is not free or trial").into()),
///     }
/// }
///
/// tidemark_sdk::transform!(drop_free, keys = KEYS, init = check);
/// ```
#[macro_export]
macro_rules! transform {
    ($function:path $(, keys = $keys:expr)? $(, init = $init:path)? $(,)?) => {
        struct __TidemarkTransform;

        impl $crate::__private::TransformGuest for __TidemarkTransform {
            fn transform(
                batch: $crate::__private::WitBatch,
            ) -> ::std::result::Result<$crate::__private::WitTransformed, $crate::__private::WitError>
            {
                $crate::__private::run_transform(batch, $function)
            }
        }

        $crate::__lifecycle!(
            $crate::__private::TransformLifecycle,
            __TidemarkTransform
            $(, keys = $keys)?
            $(, init = $init)?
        );

        $crate::transform::export_world!(__TidemarkTransform with_types_in $crate::transform);
    };
}

/// Exports a function as this component's transform, rows in (a [`RawBatch`]) and out as
/// JSON array text, unparsed: `fn(RawBatch) -> Result<String>` or
/// `Result<Transformed<String>>` (see [`Transformed::raw`]). For transforms that pass most
/// rows through untouched or parse them with their own types; the output must keep the
/// `{"op", "row"}` element form. Takes `keys = …` and `init = …` as [`transform!`] does.
#[macro_export]
macro_rules! transform_raw {
    ($function:path $(, keys = $keys:expr)? $(, init = $init:path)? $(,)?) => {
        struct __TidemarkRawTransform;

        impl $crate::__private::TransformGuest for __TidemarkRawTransform {
            fn transform(
                batch: $crate::__private::WitBatch,
            ) -> ::std::result::Result<$crate::__private::WitTransformed, $crate::__private::WitError>
            {
                $crate::__private::run_transform_raw(batch, $function)
            }
        }

        $crate::__lifecycle!(
            $crate::__private::TransformLifecycle,
            __TidemarkRawTransform
            $(, keys = $keys)?
            $(, init = $init)?
        );

        $crate::transform::export_world!(__TidemarkRawTransform with_types_in $crate::transform);
    };
}

/// Exports `fn(Batch) -> Result<Vec<Rejection>>` as this component's destination: the rows
/// it rejects (none: all delivered), or an [`Error`] for the whole batch. Takes
/// `keys = …` and `init = …` as [`transform!`] does.
#[macro_export]
macro_rules! destination {
    ($function:path $(, keys = $keys:expr)? $(, init = $init:path)? $(,)?) => {
        struct __TidemarkDestination;

        impl $crate::__private::DestinationGuest for __TidemarkDestination {
            fn deliver(
                batch: $crate::__private::WitBatch,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::__private::WitRejection>,
                $crate::__private::WitError,
            > {
                $crate::__private::run_destination(batch, $function)
            }
        }

        $crate::__lifecycle!(
            $crate::__private::DestinationLifecycle,
            __TidemarkDestination
            $(, keys = $keys)?
            $(, init = $init)?
        );

        $crate::destination::export_world!(__TidemarkDestination with_types_in $crate::destination);
    };
}

/// The `lifecycle` export of a module: its keys (default: none declared) and its `init`
/// (default: nothing to check).
#[doc(hidden)]
#[macro_export]
macro_rules! __lifecycle {
    ($guest:path, $name:ident $(, keys = $keys:expr)? $(, init = $init:path)?) => {
        impl $guest for $name {
            fn config_keys() -> ::std::option::Option<::std::vec::Vec<$crate::__private::WitConfigKey>> {
                #[allow(unused_mut, unused_assignments)]
                let mut keys: ::std::option::Option<&[$crate::ConfigKey]> = ::std::option::Option::None;
                $(keys = ::std::option::Option::Some($keys);)?
                $crate::__private::declare(keys)
            }

            fn init() -> ::std::result::Result<(), ::std::string::String> {
                #[allow(unused_mut, unused_assignments)]
                let mut init: fn() -> $crate::Result<()> = $crate::__private::no_init;
                $(init = $init;)?
                $crate::__private::run_init(init)
            }
        }
    };
}
