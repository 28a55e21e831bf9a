//! Name resolution for outbound HTTP: a host name must resolve to public addresses only, and
//! the address checked is the one connected to, since this resolver is the client's own.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::origin::private_kind;

/// Resolves host names, refusing any that resolves to a non-public address.
pub(in crate::runtime) struct PublicResolver;

#[derive(Debug)]
pub(in crate::runtime) enum ResolveError {
    NotPublic {
        host: String,
        address: IpAddr,
        kind: &'static str,
    },
    Lookup {
        host: String,
        source: std::io::Error,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotPublic {
                host,
                address,
                kind,
            } => write!(f, "{host} resolves to the {kind} address {address}"),
            ResolveError::Lookup { host, source } => write!(f, "cannot resolve {host}: {source}"),
        }
    }
}

impl StdError for ResolveError {}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let looked_up = tokio::net::lookup_host((host.clone(), 0)).await;
            let addresses: Vec<SocketAddr> = match looked_up {
                Ok(addresses) => addresses.collect(),
                Err(source) => return Err(boxed(ResolveError::Lookup { host, source })),
            };
            if let Some((address, kind)) = addresses
                .iter()
                .find_map(|address| Some((address.ip(), private_kind(address.ip())?)))
            {
                return Err(boxed(ResolveError::NotPublic {
                    host,
                    address,
                    kind,
                }));
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// Boxed as itself, so that [`find_cause`] finds it (`.into()` would box the box).
fn boxed(err: ResolveError) -> Box<dyn StdError + Send + Sync> {
    Box::new(err)
}

pub(in crate::runtime) fn find_cause<'a, T: StdError + 'static>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        cause = current.source();
    }
    None
}

/// An error and its causes on one line: reqwest's own message is often just "error sending
/// request".
pub(in crate::runtime) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_that_resolve_to_loopback_are_refused() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match PublicResolver.resolve(name).await {
            Ok(_) => panic!("localhost resolved"),
            Err(err) => err,
        };
        let refusal = find_cause::<ResolveError>(err.as_ref()).expect("a resolve error");
        assert!(
            matches!(
                refusal,
                ResolveError::NotPublic {
                    kind: "loopback",
                    ..
                }
            ),
            "{refusal}"
        );
    }
}
