//! A simulated container runtime: containers are entries in memory that run as soon as they are
//! made (after an optional delay standing for Docker's own start time).

use std::time::Duration;

use site_manager::reconcile::{Action, Observed, Wanted};

/// The containers of one simulated host.
#[derive(Default)]
pub struct SimRuntime {
    containers: Vec<Observed>,
    next_id: u64,
    start_delay: Duration,
    /// Containers created, replaced, started and removed since the start.
    pub actions: u64,
}

impl SimRuntime {
    pub fn new(start_delay: Duration) -> Self {
        Self { start_delay, ..Default::default() }
    }

    /// What `docker ps` would show.
    pub fn observed(&self) -> &[Observed] {
        &self.containers
    }

    /// Carries out the site-manager's plan.
    pub async fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            self.actions += 1;
            match action {
                Action::Create(w) => self.create(&w).await,
                Action::Replace { old, wanted } => {
                    self.containers.retain(|c| c.id != old);
                    self.create(&wanted).await;
                }
                Action::Start { id } => {
                    if let Some(c) = self.containers.iter_mut().find(|c| c.id == id) {
                        c.state = "running".into();
                    }
                }
                Action::Remove { id } => self.containers.retain(|c| c.id != id),
            }
        }
    }

    async fn create(&mut self, w: &Wanted) {
        if !self.start_delay.is_zero() {
            tokio::time::sleep(self.start_delay).await;
        }
        self.next_id += 1;
        self.containers.push(Observed {
            id: format!("sim{:09}", self.next_id),
            app: w.app.clone(),
            service: w.service.name.clone(),
            replica: w.replica,
            generation: w.generation,
            digest: w.digest.clone(),
            image: w.service.image.clone(),
            image_id: "sha256:simulated".into(),
            state: "running".into(),
            health: String::new(),
            networks: Default::default(),
        });
    }
}
