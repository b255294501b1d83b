file(READ ${INPUT} content)
file(WRITE ${OUTPUT} "#include <string_view>\nnamespace ${NS} {\nstd::string_view ${FN}() {\n  static constexpr char text[] = R\"vs_embed(${content})vs_embed\";\n  return {text, sizeof(text) - 1};\n}\n}  // namespace ${NS}\n")
