//! The trace each app's desired state arrived with (its NATS headers), so the work it causes on
//! this host (`site.reconcile`, `container.start`) joins the trace of the apply at the hub.

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::HeaderMap;
use edge_bus::trace::Context;
use edge_types::Name;

/// Per app: the generation whose desired state carried a trace context, and that context.
#[derive(Default)]
pub struct AppTraces(Mutex<HashMap<Name, (u64, Context)>>);

impl AppTraces {
    /// Notes the trace context (or its absence) of `app`'s desired state of `generation`.
    pub fn record(&self, app: &Name, generation: u64, headers: Option<&HeaderMap>) {
        let mut map = self.0.lock().expect("traces lock");
        match edge_bus::trace::remote(headers) {
            Some(cx) => {
                map.insert(app.clone(), (generation, cx));
            }
            None => {
                map.remove(app);
            }
        }
    }

    /// A `site.reconcile` span in the trace of `app`'s desired state of `generation`, if that
    /// state came with one.
    pub fn reconcile_span(&self, site: &Name, host: &Name, app: &Name, generation: u64) -> Option<tracing::Span> {
        let map = self.0.lock().expect("traces lock");
        let (traced, cx) = map.get(app)?;
        if *traced != generation {
            return None;
        }
        let span = tracing::info_span!("site.reconcile", %site, %host, %app, generation);
        edge_bus::trace::child_of(&span, cx);
        Some(span)
    }
}
