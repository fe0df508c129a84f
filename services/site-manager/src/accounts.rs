//! Gives the site's leaf server the site account's JWT as the authority last signed it (with
//! the credentials of blocked hosts revoked), which arrives with the site's host policy
//! (`SiteHosts::account_jwt`). The leaf server holds it in memory only, so the leader gives it
//! again after a while and whenever it changes: a restarted leaf server relearns it within
//! `every`. Sent with the site's system user (`sys.creds`), which may do nothing else.

use std::time::{Duration, Instant};

use edge_auth::claims;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::desired::HostPolicy;

/// How often the leader gives an unchanged JWT again.
const AGAIN_AFTER: Duration = Duration::from_secs(30);

pub struct AccountPusher {
    pub leaf: edge_bus::Endpoint,
    pub policy: HostPolicy,
    pub leading: watch::Receiver<bool>,
    pub every: Duration,
}

impl AccountPusher {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut client = None;
        let mut last: Option<(String, Instant)> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            if !*self.leading.borrow() {
                last = None;
                continue;
            }
            let jwt = self.policy.lock().expect("host policy lock").as_ref().and_then(|p| p.account_jwt.clone());
            let Some(jwt) = jwt else { continue };
            if last.as_ref().is_some_and(|(j, at)| j == &jwt && at.elapsed() < AGAIN_AFTER) {
                continue;
            }
            match self.push(&mut client, &jwt).await {
                Ok(()) => {
                    if last.as_ref().is_none_or(|(j, _)| j != &jwt) {
                        tracing::info!(
                            "site account updated at the leaf server (host credentials revoked or reinstated)"
                        );
                    }
                    last = Some((jwt, Instant::now()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot give the leaf server the site account's JWT; will retry");
                    client = None;
                }
            }
        }
    }

    async fn push(&self, client: &mut Option<async_nats::Client>, jwt: &str) -> Result<(), edge_bus::BusError> {
        let account = edge_auth::jwt::decode::<claims::Account>(jwt)
            .map_err(|e| edge_bus::BusError::Claims(format!("the site account's JWT: {e}")))?
            .sub;
        if client.is_none() {
            *client = Some(edge_bus::connect(&self.leaf, "site-manager-accounts", false).await?);
        }
        let c = client.as_ref().expect("connected");
        edge_bus::claims::push_account_jwt_of(c, &account, jwt).await
    }
}
