// SVG -> PNG through librsvg and cairo, loaded at run time (dlopen) on the
// first request: the vramscope binary does not depend on them (with their
// ~50 libraries: pango, X11, ICU...), and where they are missing a PNG
// request fails with a message that says what to install.
#pragma once

#include <string>

#include "common/result.h"

namespace vs::tools {

// The SVG rasterized at its own size (at most max_side px a side) onto a white
// surface and encoded as PNG of at most max_bytes; an error names what failed.
Result<std::string> png_from_svg(const std::string& svg, double max_side, std::size_t max_bytes);

}  // namespace vs::tools
