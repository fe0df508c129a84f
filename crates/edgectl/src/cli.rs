//! Command-line grammar.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "edgectl", version, about = "Drive the edge orchestrator")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Hub NATS URL; defaults to the running dev stack's hub.
    #[arg(long, global = true, env = "EDGE_NATS_URL")]
    pub server: Option<String>,
    /// Output format of read commands.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Directory holding the dev stack's state, logs and stores.
    #[arg(long, global = true, env = "EDGE_DEV_DIR", default_value = ".edge")]
    pub dev_dir: PathBuf,
    /// Credentials file to connect with; defaults to `admin.creds` of the authority
    /// (`--auth-dir`) when there is one.
    #[arg(long, global = true, env = "EDGE_NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// Directory of the authority (operator and account keys) that `edgectl auth init` made;
    /// defaults to `auth` in the dev directory.
    #[arg(long, global = true, env = "EDGE_AUTH_DIR")]
    pub auth_dir: Option<PathBuf>,
}

impl Global {
    pub fn auth_dir(&self) -> PathBuf {
        self.auth_dir.clone().unwrap_or_else(|| self.dev_dir.join("auth"))
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a whole stack locally as processes: hub, sites (leaf server + site-manager), services.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Applications.
    #[command(subcommand)]
    App(AppCommand),
    /// Sites.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Keys and credentials: who may say what on the bus.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Tenants: application teams, each with its own account; they see and change only their
    /// own applications and secrets.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Hosts of a site.
    #[command(subcommand)]
    Host(HostCommand),
    /// The blocks in force (tenants, sites, hosts).
    #[command(subcommand)]
    Block(BlockCommand),
    /// Secrets: stored encrypted, delivered sealed to the sites whose apps use them.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Container images in the project's store, staged at the sites that run them.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Alerts firing now (apps degrading, sites offline, buffers nearly full), with causes.
    Alerts,
    /// Container logs of an application, fetched from its sites on demand.
    Logs(LogsArgs),
    /// What an application's containers published to one of its topics (`bus.topics`), from
    /// every site or those named, as the hub received them.
    Events(EventsArgs),
    /// Send one message to an application's `to_sites` topic: stored for every site it runs at
    /// (or those named), delivered to each when its link is up.
    Send(SendArgs),
    /// Asks a service whether it is up (`edge.v1.<service>.health`); exits 0 when it answers
    /// ok, 1 otherwise (a liveness probe for containers).
    Health {
        /// scheduler, secrets, registry-sync or telemetry.
        service: String,
    },
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub app: String,
    /// Only this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Last lines of each container.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub tail: u32,
    /// Only lines of the last this many seconds.
    #[arg(long)]
    pub since: Option<u64>,
    /// Only lines containing this text.
    #[arg(long)]
    pub grep: Option<String>,
    /// Keep printing new lines until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// An application's topic, at every site or those named.
#[derive(Args, Debug)]
pub struct TopicArgs {
    pub app: String,
    /// The topic, as its spec declares it.
    #[arg(long)]
    pub topic: String,
    /// Only this site (repeat for several).
    #[arg(long)]
    pub site: Vec<String>,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    pub topic: TopicArgs,
    /// Only messages the hub received in the last DURATION (`90s`, `15m`, `2h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Stop after this many messages.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep printing new messages until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// A `direction: to_sites` topic.
    #[command(flatten)]
    pub topic: TopicArgs,
    /// An id of your choosing: sending again with the same id within two minutes stores it once.
    #[arg(long)]
    pub id: Option<String>,
    /// The message; `-` or absent: read from standard input.
    pub data: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Copy an image from the local Docker Engine into the store (blobs already there are not
    /// sent again); apps that name it then run it by digest, staged at their sites.
    Push { image: String },
    /// Copy an image from an OCI registry (`host[:port]/path:tag`, every platform of its index)
    /// into the store; registry-sync fetches it and checks every blob.
    Import { reference: String },
    /// The images in the store: reference, digest, platforms, size.
    List,
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a new secret; the value comes from --from-file or standard input (one trailing
    /// newline dropped), never from the command line.
    Put {
        name: String,
        #[arg(long)]
        from_file: Option<PathBuf>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Give a secret a new value; every site holding it gets it, and its containers are
    /// restarted or have the file updated in place, as their spec says.
    Rotate {
        name: String,
        #[arg(long)]
        from_file: Option<PathBuf>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List secrets (never their values), the apps that use them and the sites holding them.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show a secret's versions, who made each, its apps and sites.
    Describe {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete a secret that no application uses; it is withdrawn from every site.
    Delete {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Start the stack (hub, N sites, all central services).
    Up {
        /// Number of sites.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
        sites: u32,
    },
    /// Show the stack's processes and sites.
    Status,
    /// Stop the stack, remove its containers and its state directory.
    Down,
}

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Apply an application spec (YAML or JSON); an unchanged spec is a no-op.
    Apply {
        /// Spec file, or - for standard input.
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Show, without applying, which sites a spec would run at and why the others are excluded.
    Plan {
        /// Spec file, or - for standard input.
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// List applications.
    List,
    /// Show an application's spec and placement.
    Get { name: String },
    /// Show an application's status at every site.
    Status { name: String },
    /// Delete an application and remove its containers everywhere.
    Delete { name: String },
    /// Rollouts of new versions: progress, pause, resume.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Every applied version of an application, newest first, with what became of it.
    History { name: String },
    /// Roll an application back at once on every site, to the previous version or `--to` one.
    Rollback {
        name: String,
        /// Version to go back to (default: the one before the current version).
        #[arg(long = "to")]
        to_version: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Show a rollout's waves with a progress bar each, redrawn live on a terminal until the
    /// rollout ends (`--watch` also elsewhere, `--once` never).
    Status {
        name: String,
        #[arg(long, short = 'w', conflicts_with = "once")]
        watch: bool,
        #[arg(long)]
        once: bool,
    },
    /// Pause the rollout of one application, or of every application (`--all`).
    Pause {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Resume paused rollouts.
    Resume {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Make the authority: the operator key, the system and control-plane accounts, and the
    /// hub server's trust configuration (`hub-auth.conf`). Keeps an existing one.
    Init,
    /// Credentials of a control-plane user (a central service or an operator): prints the
    /// path of its credentials file, issued on first call.
    User { name: String },
    /// Rotate a control-plane user's credential: a new key and credentials file replace the
    /// old (kept as `<name>.creds.previous`, still valid, so the service can be restarted with
    /// the new file first). With `--revoke-previous`, the previous key is then revoked at the
    /// hub: whoever still holds it is dropped and refused.
    Rotate {
        name: String,
        #[arg(long)]
        revoke_previous: bool,
    },
    /// Issue the hub's leafnode TLS certificate, signed by the authority's CA, for the names
    /// (DNS names or IP addresses) the sites dial; prints the certificate and key paths.
    Tls {
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SiteCommand {
    /// List sites with their labels, hosts and connection state.
    List,
    /// Issue a site's bundle from the authority (`--auth-dir`): its own account, its leaf
    /// link's credentials (allowed only the site's own subjects at the hub), its site-manager's
    /// credentials and its leaf server's trust configuration. Prints the bundle's directory;
    /// the same files on a second call.
    ///
    /// With `--join`, the bundle has no leaf-link credential but a one-time token (`token`):
    /// the site makes its own key at first boot, calls home with the token, and receives its
    /// credential once approved (`site approve`, or at once with `--auto-approve`). The
    /// scheduler is told the token's digest, never the token.
    Add {
        site: String,
        #[arg(long)]
        join: bool,
        /// Approve the site as soon as it presents its token.
        #[arg(long, requires = "join")]
        auto_approve: bool,
        /// Hours the token may be used in.
        #[arg(long, default_value_t = 72, requires = "join")]
        valid_hours: u64,
    },
    /// Approve a site that joined (or will join) with its token: it receives its leaf-link
    /// credential at its next call-home.
    Approve { site: String },
    /// Invitations: sites invited to join, whether they joined (with which key), approved, and
    /// refused attempts.
    Invites,
    /// Block a site in one step: its leaf link is revoked at the hub (the hub drops the link
    /// and refuses it from then on, however often the site redials), it gets no secrets, the
    /// site list shows it blocked, and the block is recorded in the hub's AUDIT stream. Its
    /// workloads keep running on their own. Needs the authority (`--auth-dir`).
    Block {
        site: String,
        /// Why, for the audit record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reinstate a blocked site's leaf link (recorded in the AUDIT stream too).
    Unblock {
        site: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Re-issue a site's leaf-link credential (the same key, valid from now) into its bundle,
    /// by hand: for a launcher whose sites do not renew on their own (the scheduler renews
    /// them when given `SCHEDULER_LEAF_SIGNER` and the site-manager `SITE_MANAGER_HUB_URL`).
    Renew {
        site: String,
        /// Days the credential is valid.
        #[arg(long, default_value_t = 90)]
        valid_days: u64,
    },
    /// Set (`key=value`) or remove (`key-`) central labels of a site.
    Label {
        site: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Make the site create a new key pair; everything sealed to it is re-sealed to the new
    /// key (an offline site rotates when its link returns).
    RotateKey { site: String },
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Make a tenant's account (its users reach only their own applications and secrets) and
    /// its first user, `admin`; prints that user's credentials file. Needs the authority.
    Add { tenant: String },
    /// Issue (once) credentials of another user of a tenant; prints the file.
    User { tenant: String, name: String },
    /// The tenants the authority has made.
    List,
    /// Which sites a tenant's applications may run at: a site selector (`customer = acme`)
    /// every one of its applications' placement must also satisfy; `""` for any site. Its
    /// applications are placed again at once.
    Sites { tenant: String, selector: String },
    /// Block a tenant in one step: every user's credentials are revoked (connected ones are
    /// dropped), its applications stop at every site and their secrets are withdrawn;
    /// recorded in the AUDIT stream.
    Block {
        tenant: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reinstate a blocked tenant: its users may connect again and its applications run again.
    Unblock {
        tenant: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum HostCommand {
    /// Block a host (stolen, failing, to be swapped): the site moves its workloads to its other
    /// hosts, places nothing more on it, and the host's own site-manager stops what it runs;
    /// recorded in the AUDIT stream. An offline site acts when its link returns.
    Block {
        site: String,
        host: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let a blocked host run workloads again.
    Unblock {
        site: String,
        host: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Approve hosts for a site. The first approval makes the site's host list explicit: any
    /// other host that beats at the site is then unknown, rejected (it runs nothing) and
    /// listed (`site list`) until approved. Hosts added or swapped under an approved name are
    /// taken as they are; a host id two machines use at once is rejected as a duplicate.
    Approve {
        site: String,
        #[arg(required = true)]
        hosts: Vec<String>,
    },
    /// Remove approved hosts (their workloads move to the site's other hosts).
    Remove {
        site: String,
        #[arg(required = true)]
        hosts: Vec<String>,
    },
    /// Admit any host at the site again (no list).
    Any { site: String },
    /// Invite a host to join the site with a key of its own: prints a directory with its
    /// one-time token and the enrolment credential. The host's site-manager, started with
    /// `--host-token` (and `--hub-url`, `--enrol-creds`, `--nats-creds` where its credential
    /// goes), makes its key and calls home; once approved (`host approve`, or
    /// `--auto-approve`) it receives a credential of its own, which `host block` revokes at
    /// the site's leaf server. Needs the authority (`--auth-dir`).
    Invite {
        site: String,
        host: String,
        /// Approve the host as soon as it presents its token.
        #[arg(long)]
        auto_approve: bool,
        /// Hours the token may be used in.
        #[arg(long, default_value_t = 72)]
        valid_hours: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum BlockCommand {
    /// List the tenants, sites and hosts blocked now.
    List,
}
