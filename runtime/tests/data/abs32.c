/* Takes the address of an extern in non-PIC code: gcc emits an absolute 32-bit relocation
 * (R_X86_64_32), which only fits when the extern lies in the low 4 GiB. */
extern float kiln_test_extern(float x);

void *kiln_extern_address(void) {
    return (void *)kiln_test_extern;
}
