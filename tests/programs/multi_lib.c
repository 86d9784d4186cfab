/* Library half of the multi-object program (see multi_main.c). */
extern int main_value;
extern const int main_table[4];
extern int main_hook(int x);

int lib_counter = 17;
const char lib_name[] = "multi_lib";
int *lib_ptr_to_main_value = &main_value;

int lib_square(int x) {
    lib_counter++;
    return x * x;
}

int lib_negate(int x) {
    lib_counter++;
    return -x;
}

int lib_compute(int x) {
    lib_counter++;
    return x + main_table[0] + main_table[3] + main_value;
}

int lib_call_main_hook(int x) {
    return main_hook(x) + main_hook(x + 1);
}
