# vs_embed_text(<file> <namespace> <function> <output.cpp>): generates
# `std::string_view <namespace>::<function>()` returning the file's text,
# regenerated whenever the file changes.
function(vs_embed_text input ns fn output)
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -DINPUT=${input} -DNS=${ns} -DFN=${fn} -DOUTPUT=${output}
            -P ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    DEPENDS ${input} ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    COMMENT "Embedding ${input}")
endfunction()

# vs_embed_dir(<glob> <namespace> <output.cpp>): generates
# `std::string_view <namespace>::find(std::string_view file_name)` (empty when
# absent) and `std::vector<std::string_view> <namespace>::names()` over every
# file matching the glob. A file added to the directory is picked up at the
# next build (CONFIGURE_DEPENDS).
function(vs_embed_dir pattern ns output)
  file(GLOB files CONFIGURE_DEPENDS ${pattern})
  list(SORT files)
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} "-DFILES=${files}" -DNS=${ns} -DOUTPUT=${output}
            -P ${CMAKE_SOURCE_DIR}/cmake/embed_dir_run.cmake
    DEPENDS ${files} ${CMAKE_SOURCE_DIR}/cmake/embed_dir_run.cmake
    COMMENT "Embedding ${pattern}"
    VERBATIM)  # keeps the ';' of the file list inside one shell argument
endfunction()
