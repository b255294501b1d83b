# Links examples/traces/<name>/trace.db into the binary with the assembler's
# .incbin (no multi-megabyte C array to compile). Produces the assembly file
# and the list of names that src/demo_traces.cpp expands.
function(vs_embed_demo_traces out_dir out_sources)
  file(GLOB dbs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/examples/traces/*/trace.db)
  list(SORT dbs)
  set(asm ".section .rodata\n")
  set(list "")
  foreach(db ${dbs})
    get_filename_component(dir ${db} DIRECTORY)
    get_filename_component(name ${dir} NAME)
    string(APPEND asm ".global vs_demo_${name}_begin\n.global vs_demo_${name}_end\n.balign 16\n"
                      "vs_demo_${name}_begin:\n.incbin \"${db}\"\nvs_demo_${name}_end:\n")
    string(APPEND list "VS_DEMO_TRACE(${name})\n")
  endforeach()
  string(APPEND asm ".section .note.GNU-stack,\"\",@progbits\n")
  file(WRITE ${out_dir}/demo_traces.S "${asm}")
  file(WRITE ${out_dir}/demo_trace_list.inc "${list}")
  set_source_files_properties(${out_dir}/demo_traces.S PROPERTIES OBJECT_DEPENDS "${dbs}")
  set(${out_sources} ${out_dir}/demo_traces.S PARENT_SCOPE)
endfunction()
