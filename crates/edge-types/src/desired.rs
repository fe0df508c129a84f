//! Desired state of one application at one site, written by the scheduler to the hub stream
//! DESIRED and sourced into the site's own DESIRED stream.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::app::AppSpec;
use crate::image::ImageRecord;
use crate::names::Name;

/// What should run at `site` for `app`. `spec: null` is a tombstone: remove the app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DesiredApp {
    pub site: Name,
    pub app: Name,
    /// Application generation; grows by one each time the spec changes. A site acts on a
    /// changed generation, never on a reconnect.
    #[schemars(range(min = 1))]
    pub generation: u64,
    /// The spec to run, or `null` when the app must leave the site.
    pub spec: Option<AppSpec>,
    /// Value orders the operator declared for labels the host selector compares
    /// (`size: [small, medium, large]`), so the site places on hosts as the hub would.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub orders: BTreeMap<String, Vec<String>>,
    /// The spec's images found in the image store, by reference: staged at the site by
    /// registry-sync, loaded into Docker from the site's store and run by digest. Images not
    /// in the store must already be on the hosts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub images: BTreeMap<String, ImageRecord>,
}

/// How far the hub has processed a site's events: the site may drop everything in its event
/// stream up to and including `through` (a sequence of the site's SITE_EVENTS), so its buffer
/// holds only what the hub does not have yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsWatermark {
    pub site: Name,
    pub through: u64,
}

impl DesiredApp {
    /// Deterministic `Nats-Msg-Id` of this state written after stream sequence `after` of its
    /// subject: a retried publish is deduplicated, while a later move back to an earlier state
    /// (placed, removed, placed again) is a new message.
    pub fn msg_id(&self, after: u64) -> String {
        let kind = if self.spec.is_some() { "put" } else { "del" };
        format!("desired.{}.{}.{}.{kind}.{after}", self.site, self.app, self.generation)
    }
}
