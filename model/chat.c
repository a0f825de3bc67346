#include "model/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *chat_prompt(const char *system, const char *user)
{
    char *out = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&out, &len);
    if (!fp)
        return NULL;
    fputs("<|begin_of_text|>", fp);
    if (system && *system)
        fprintf(fp, "System: %s<|eot_id|>", system);
    fprintf(fp, "User: %s<|eot_id|>Assistant: ", user);
    if (fclose(fp) != 0) {
        free(out);
        return NULL;
    }
    return out;
}
