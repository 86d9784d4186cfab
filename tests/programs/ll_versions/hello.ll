; lli --remote-mcjit: printf to stdout, fputs to stderr, exit code 7.
; Typed-pointer IR (LLVM 14); LLVM 19/22 read it as opaque pointers.
@.msg = private unnamed_addr constant [16 x i8] c"hello from %s!\0A\00"
@.who = private unnamed_addr constant [4 x i8] c"lli\00"
@.err = private unnamed_addr constant [16 x i8] c"stderr line ok\0A\00"
@stderr = external global i8*

declare i32 @printf(i8*, ...)
declare i32 @fputs(i8*, i8*)

define i32 @main() {
entry:
  %m = getelementptr [16 x i8], [16 x i8]* @.msg, i64 0, i64 0
  %w = getelementptr [4 x i8], [4 x i8]* @.who, i64 0, i64 0
  %r = call i32 (i8*, ...) @printf(i8* %m, i8* %w)
  %e = getelementptr [16 x i8], [16 x i8]* @.err, i64 0, i64 0
  %f = load i8*, i8** @stderr
  %r2 = call i32 @fputs(i8* %e, i8* %f)
  ret i32 7
}
