//! Control (edit source) images of instruction/edit datasets.
//!
//! A target `folder/a/cat.png` is paired with `<control_path>/cat.<ext>` in every control folder (the
//! stem decides, not the sub-folder), as ai-toolkit does. Control images are not bucketed with their
//! target: FLUX.2 takes reference images at their own size, under the reference rules of its
//! pipeline (`default_prep` in the FLUX.2 sampling code):
//! - a side below 64 px, or an aspect ratio above 8, makes the image unusable (reported, not silently
//!   stretched);
//! - above the pixel cap (1024^2 by default) the image is scaled by `sqrt(cap / area)` with each side
//!   rounded down, keeping its aspect ratio;
//! - then each side is floored to a multiple of 16 by cropping the middle.
//!
//! Unlike ai-toolkit's FLUX.2 path, a control image is flipped together with its target's `flip_x` /
//! `flip_y` copy: a mirrored target with an unmirrored source would teach the model to mirror.

use serde::{Deserialize, Serialize};

use crate::bucket::{CropBox, Size};
use crate::error::{Error, Result};

/// Size rules for control images (defaults: FLUX.2 reference rules).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlRules {
    /// Shortest allowed side in pixels.
    pub min_side: u32,
    /// Largest allowed long-side / short-side ratio.
    pub max_aspect: f64,
    /// Area cap in pixels; larger images are scaled down to about this area.
    pub max_pixels: u64,
    /// Sides are cropped down to a multiple of this.
    pub multiple: u32,
}

impl Default for ControlRules {
    fn default() -> Self {
        ControlRules { min_side: 64, max_aspect: 8.0, max_pixels: 1024 * 1024, multiple: 16 }
    }
}

impl ControlRules {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: &str| Err(Error::config(key, "load options: control", msg));
        if self.multiple == 0 {
            return bad("multiple", "must be at least 1");
        }
        if self.max_pixels == 0 {
            return bad("max_pixels", "must be at least 1");
        }
        if !(self.max_aspect.is_finite() && self.max_aspect >= 1.0) {
            return bad("max_aspect", "must be a number >= 1");
        }
        Ok(())
    }
}

/// How a control image is turned into encoder input: resize to `resize_to` (a no-op when equal to
/// `source`), then crop `crop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ControlGeometry {
    /// Oriented size of the control file.
    pub source: Size,
    pub resize_to: Size,
    pub crop: CropBox,
}

impl ControlGeometry {
    /// Final size of the prepared control image.
    pub fn size(&self) -> Size {
        Size::new(self.crop.width, self.crop.height)
    }
}

/// Applies the rules to a control image of `source` size; the error says which rule failed.
pub fn control_geometry(source: Size, rules: &ControlRules) -> std::result::Result<ControlGeometry, String> {
    let (w, h) = (source.width, source.height);
    if w < rules.min_side || h < rules.min_side {
        return Err(format!("{source} has a side below the minimum of {} px", rules.min_side));
    }
    let aspect = f64::from(w.max(h)) / f64::from(w.min(h));
    if aspect > rules.max_aspect {
        return Err(format!("{source} has aspect ratio {aspect:.2}, above the maximum of {}", rules.max_aspect));
    }
    let area = source.area();
    let resize_to = if area <= rules.max_pixels {
        source
    } else {
        let s = (rules.max_pixels as f64 / area as f64).sqrt();
        Size::new((f64::from(w) * s) as u32, (f64::from(h) * s) as u32)
    };
    let m = rules.multiple;
    let (cw, ch) = ((resize_to.width / m) * m, (resize_to.height / m) * m);
    if cw == 0 || ch == 0 {
        return Err(format!("{source} leaves no {m}-px multiple after capping to {} px", rules.max_pixels));
    }
    Ok(ControlGeometry {
        source,
        resize_to,
        crop: CropBox { x: (resize_to.width - cw) / 2, y: (resize_to.height - ch) / 2, width: cw, height: ch },
    })
}
