; Remote MCJIT does not forward program arguments: main gets argc 0 (same with
; lli-child-target). Prints argc and every argv entry; exit code argc.
@fmt = private unnamed_addr constant [9 x i8] c"argc=%d\0A\00"
@fa = private unnamed_addr constant [13 x i8] c"argv[%d]=%s\0A\00"

declare i32 @printf(ptr, ...)

define i32 @main(i32 %argc, ptr %argv) {
entry:
  call i32 (ptr, ...) @printf(ptr @fmt, i32 %argc)
  br label %check

check:
  %i = phi i32 [ 0, %entry ], [ %n, %body ]
  %more = icmp slt i32 %i, %argc
  br i1 %more, label %body, label %done

body:
  %idx = sext i32 %i to i64
  %pp = getelementptr ptr, ptr %argv, i64 %idx
  %p = load ptr, ptr %pp
  call i32 (ptr, ...) @printf(ptr @fa, i32 %i, ptr %p)
  %n = add i32 %i, 1
  br label %check

done:
  ret i32 %argc
}
