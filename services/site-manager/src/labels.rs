//! Docker labels the site-manager puts on every container it owns. They are how a restarted
//! site-manager recognises (adopts) its running containers instead of recreating them.

pub const MANAGED: &str = "io.edge.managed";
pub const SITE: &str = "io.edge.site";
pub const HOST: &str = "io.edge.host";
pub const APP: &str = "io.edge.app";
pub const VERSION: &str = "io.edge.version";
pub const GENERATION: &str = "io.edge.generation";
pub const SERVICE: &str = "io.edge.service";
pub const REPLICA: &str = "io.edge.replica";
/// Digest of the service spec the container was made from.
pub const SPEC_DIGEST: &str = "io.edge.spec-digest";
/// The image reference the spec names (the container runs it by digest when it is stored).
pub const IMAGE: &str = "io.edge.image";
