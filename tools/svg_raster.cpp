#include "tools/svg_raster.h"

#include <cairo.h>
#include <dlfcn.h>
#include <librsvg/rsvg.h>

#include <cmath>
#include <memory>
#include <mutex>

namespace vs::tools {
namespace {

constexpr const char* kRsvgLibrary = "librsvg-2.so.2";  // Debian: librsvg2-2; it loads cairo, gobject, glib

// The functions used, resolved once; types from the -dev headers, so a
// signature change is a compile error rather than a crash.
struct Raster {
  decltype(&rsvg_handle_new_from_data) new_from_data;
  decltype(&rsvg_handle_get_intrinsic_size_in_pixels) intrinsic_size;
  decltype(&rsvg_handle_render_document) render_document;
  decltype(&g_object_unref) object_unref;
  decltype(&g_error_free) error_free;
  decltype(&cairo_image_surface_create) image_surface_create;
  decltype(&cairo_surface_destroy) surface_destroy;
  decltype(&cairo_create) create;
  decltype(&cairo_destroy) destroy;
  decltype(&cairo_set_source_rgb) set_source_rgb;
  decltype(&cairo_paint) paint;
  decltype(&cairo_status) status;
  decltype(&cairo_status_to_string) status_to_string;
  decltype(&cairo_surface_write_to_png_stream) write_to_png_stream;
};

template <class Fn>
bool resolve(void* lib, const char* name, Fn& fn, std::string& missing) {
  fn = reinterpret_cast<Fn>(dlsym(lib, name));
  if (!fn) missing += (missing.empty() ? "" : ", ") + std::string(name);
  return fn != nullptr;
}

Result<const Raster*> load_raster() {
  static Result<const Raster*> loaded = []() -> Result<const Raster*> {
    void* lib = dlopen(kRsvgLibrary, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
      return Error{std::string("PNG charts need librsvg (") + dlerror() +
                   "): install it (Debian/Ubuntu: apt install librsvg2-2), or ask for image=svg"};
    static Raster r;
    std::string missing;
    // librsvg links cairo, gobject and glib: their symbols resolve through its handle.
    resolve(lib, "rsvg_handle_new_from_data", r.new_from_data, missing);
    resolve(lib, "rsvg_handle_get_intrinsic_size_in_pixels", r.intrinsic_size, missing);
    resolve(lib, "rsvg_handle_render_document", r.render_document, missing);
    resolve(lib, "g_object_unref", r.object_unref, missing);
    resolve(lib, "g_error_free", r.error_free, missing);
    resolve(lib, "cairo_image_surface_create", r.image_surface_create, missing);
    resolve(lib, "cairo_surface_destroy", r.surface_destroy, missing);
    resolve(lib, "cairo_create", r.create, missing);
    resolve(lib, "cairo_destroy", r.destroy, missing);
    resolve(lib, "cairo_set_source_rgb", r.set_source_rgb, missing);
    resolve(lib, "cairo_paint", r.paint, missing);
    resolve(lib, "cairo_status", r.status, missing);
    resolve(lib, "cairo_status_to_string", r.status_to_string, missing);
    resolve(lib, "cairo_surface_write_to_png_stream", r.write_to_png_stream, missing);
    if (!missing.empty())
      return Error{std::string("PNG charts: ") + kRsvgLibrary + " lacks " + missing + " (librsvg >= 2.52 is needed)"};
    return &r;
  }();
  return loaded;
}

}  // namespace

Result<std::string> png_from_svg(const std::string& svg, double max_side, std::size_t max_bytes) {
  auto loaded = load_raster();
  if (!loaded) return loaded.error();
  const Raster& r = **loaded;
  // librsvg does not document its text setup (pango, fontconfig) as safe on
  // several threads at once, and tools run on the server's worker threads.
  static std::mutex render_mutex;
  std::lock_guard lock(render_mutex);
  GError* error = nullptr;
  std::unique_ptr<RsvgHandle, decltype(r.object_unref)> handle(
      r.new_from_data(reinterpret_cast<const guint8*>(svg.data()), svg.size(), &error), r.object_unref);
  auto fail = [&](const std::string& what) {
    std::string message = "PNG chart: " + what + (error ? std::string(": ") + error->message : "");
    if (error) r.error_free(error);
    return Error{message};
  };
  if (!handle) return fail("librsvg could not parse the chart's SVG");
  double width = 0, height = 0;
  if (!r.intrinsic_size(handle.get(), &width, &height) || width < 1 || height < 1 || width > max_side ||
      height > max_side)
    return fail("the chart's size " + std::to_string(width) + "x" + std::to_string(height) +
                " px is missing or over " + std::to_string(static_cast<int>(max_side)) + " px a side");
  std::unique_ptr<cairo_surface_t, decltype(r.surface_destroy)> surface(
      r.image_surface_create(CAIRO_FORMAT_RGB24, static_cast<int>(std::ceil(width)),
                             static_cast<int>(std::ceil(height))),
      r.surface_destroy);
  std::unique_ptr<cairo_t, decltype(r.destroy)> cr(r.create(surface.get()), r.destroy);
  r.set_source_rgb(cr.get(), 1, 1, 1);
  r.paint(cr.get());
  RsvgRectangle viewport{0, 0, width, height};
  if (!r.render_document(handle.get(), cr.get(), &viewport, &error)) return fail("librsvg could not draw it");
  if (r.status(cr.get()) != CAIRO_STATUS_SUCCESS)
    return fail(std::string("cairo could not draw it: ") + r.status_to_string(r.status(cr.get())));
  std::string png;
  auto append = [](void* out, const unsigned char* data, unsigned int length) {
    static_cast<std::string*>(out)->append(reinterpret_cast<const char*>(data), length);
    return CAIRO_STATUS_SUCCESS;
  };
  if (auto status = r.write_to_png_stream(surface.get(), append, &png); status != CAIRO_STATUS_SUCCESS)
    return fail(std::string("cairo could not encode it: ") + r.status_to_string(status));
  if (png.size() > max_bytes)
    return fail("the PNG has " + std::to_string(png.size()) + " bytes, over the " + std::to_string(max_bytes) +
                " allowed");
  return png;
}

}  // namespace vs::tools
