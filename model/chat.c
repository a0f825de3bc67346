#include "model/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *chat_prompt_turns(const struct chat_turn *turns, size_t n_turns)
{
    static const char *const prefix[] = {"System", "User", "Assistant"};
    char *out = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&out, &len);
    if (!fp)
        return NULL;
    fputs("<|begin_of_text|>", fp);
    for (size_t i = 0; i < n_turns; i++) {
        const char *text = turns[i].text ? turns[i].text : "";
        if (turns[i].role == CHAT_SYSTEM && !*text)
            continue;
        fprintf(fp, "%s: %s<|eot_id|>", prefix[turns[i].role], text);
    }
    fputs("Assistant: ", fp);
    if (fclose(fp) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

char *chat_prompt(const char *system, const char *user)
{
    struct chat_turn t[2] = {{CHAT_SYSTEM, system}, {CHAT_USER, user}};
    return chat_prompt_turns(t, 2);
}
