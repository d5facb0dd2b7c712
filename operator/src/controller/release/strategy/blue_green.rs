//! Blue-green: the candidate comes up fully behind the private Service `<app>-preview` while the
//! Service `<app>` selects the stable version only; the switch moves all traffic at once.

use super::{Placement, Placing, Strategy};

pub struct BlueGreen;

impl Strategy for BlueGreen {
    fn place(&self, at: &Placing<'_>) -> Placement {
        Placement { candidate: at.total, stable: at.total, serves: false }
    }

    fn previews(&self) -> bool {
        true
    }
}
