; Remote MCJIT: a C++ exception (int 41) thrown two JIT'd frames deep and caught by a
; landing pad in main: EH frames registered in the executor, libstdc++'s personality and
; libgcc's unwinder. Exit code 42.
@_ZTIi = external constant ptr
@caught = private unnamed_addr constant [13 x i8] c"caught %d\0A\00\00\00"
@after = private unnamed_addr constant [12 x i8] c"after: %d\0A\00\00"

declare ptr @__cxa_allocate_exception(i64)
declare void @__cxa_throw(ptr, ptr, ptr)
declare ptr @__cxa_begin_catch(ptr)
declare void @__cxa_end_catch()
declare i32 @__gxx_personality_v0(...)
declare i32 @llvm.eh.typeid.for.p0(ptr)
declare i32 @printf(ptr, ...)

define void @thrower(i32 %v) noinline {
  %e = call ptr @__cxa_allocate_exception(i64 4)
  store i32 %v, ptr %e
  call void @__cxa_throw(ptr %e, ptr @_ZTIi, ptr null)
  unreachable
}

define i32 @middle(i32 %v) noinline {
  call void @thrower(i32 %v)
  ret i32 0
}

define i32 @main(i32 %argc, ptr %argv) personality ptr @__gxx_personality_v0 {
entry:
  %r = invoke i32 @middle(i32 41)
          to label %ok unwind label %lpad
ok:
  ret i32 1
lpad:
  %lp = landingpad { ptr, i32 } catch ptr @_ZTIi
  %exn = extractvalue { ptr, i32 } %lp, 0
  %sel = extractvalue { ptr, i32 } %lp, 1
  %tid = call i32 @llvm.eh.typeid.for.p0(ptr @_ZTIi)
  %match = icmp eq i32 %sel, %tid
  br i1 %match, label %catch, label %resume
catch:
  %p = call ptr @__cxa_begin_catch(ptr %exn)
  %val = load i32, ptr %p
  call i32 (ptr, ...) @printf(ptr @caught, i32 %val)
  call void @__cxa_end_catch()
  %res = add i32 %val, 1
  call i32 (ptr, ...) @printf(ptr @after, i32 %res)
  ret i32 %res
resume:
  resume { ptr, i32 } %lp
}
